"""`report.html`: one self-contained page per run — verdict, statistics, charts and a side-by-side row browser.

Everything is computed here in Python from rows and the summary (pure functions); the page only filters, sorts,
searches and expands. No network, no external files: CSS and JS are inline (vanilla, no library — the page needs a
table, a few filters and SVG bars, which a library would only make larger), charts are inline SVG.

Untrusted text (dataset rows, model output) never reaches the page as markup: it travels as JSON inside a
`<script type="application/json">` block with `<`, `>`, `&` and line separators escaped, and the page puts it on
screen with `textContent` only. A Content-Security-Policy with a per-build nonce blocks any script but the page's
own, and any network access.
"""

from __future__ import annotations

import html
import json
import math
import secrets
from typing import Any, Collection, Sequence

from toxcmp.analysis.diagnosis import CAUSES, cause_counts
from toxcmp.analysis.matrices import fine_matrix, outcome_matrix
from toxcmp.report.page import _H, _PAD, _W, bar_chart, embed_json, fill, histogram, histogram_chart  # noqa: F401
from toxcmp.report.page import pct as _pct, running_chart, running_share, seconds as _seconds, table as _table
from toxcmp.report.page import _SIDE_KEYS, _finite, _raw_for_page, recorded_p50, replayed_arms  # noqa: F401
from toxcmp.report.logprob_page import logprob_html, row_token_data
from toxcmp.report.page import label_notes_html, sample_text
from toxcmp.report.text import NO_LABEL_AGREEMENT, divergence_line, equivalence_numbers, f1_text, mcnemar_text
from toxcmp.report.text import (CONFORMANCE_HEAD, conformance_cells, conformance_lead, prompt_tokens_phrase,
                                replayed_arms)
from toxcmp.results.schema import headline_of

REPORT_FILE = "report.html"


# -- data for the page -------------------------------------------------------------------------------------------

def page_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rows for the page. Each example's text and each arm's answer are stored once and referenced by index, so a
    reference arm compared with several others does not repeat its (long) reasoning per comparison."""
    rows = [{k: _finite(v) for k, v in r.items()} for r in rows]
    out: list[dict[str, Any]] = []
    sides: list[dict[str, Any]] = []
    texts: list[str] = []
    side_index: dict[tuple[Any, Any], int] = {}
    text_index: dict[Any, int] = {}
    for r in rows:
        if r.get("example_id") not in text_index:
            text_index[r.get("example_id")] = len(texts)
            texts.append(r.get("text") or "")
        item = {"id": r.get("example_id"), "text": text_index[r.get("example_id")], "truth": r.get("toxicity"),
                "pair": r.get("arm") or r.get("b_backend") or "B",
                "cause": r.get("cause"), "match": r.get("binary_match"),
                "csim": r.get("content_similarity"), "rsim": r.get("reasoning_similarity"),
                "margin": r.get("margin_nats"), "margin_kind": r.get("margin_kind"),
                "diverge_char": r.get("diverge_char"), "divergence_kind": r.get("divergence_kind"), "sides": []}
        for p in ("a", "b"):
            side = {k: r.get(f"{p}_{k}") for k in _SIDE_KEYS}
            raw = _raw_for_page(r.get(f"{p}_raw"), side["content"], side["reasoning"])
            side["raw"] = raw
            side["raw_note"] = None if raw is not None or not r.get(f"{p}_raw") else (
                "same as the final answer" if r.get(f"{p}_raw") == side["content"]
                else "final answer + reasoning with Harmony markers")
            key = (r.get("example_id"), side.get("backend") or p, r.get("repeat") if p == "b" else 0)
            if key not in side_index:
                side_index[key] = len(sides)
                sides.append(side)
            item["sides"].append(side_index[key])
        out.append(item)
    return {"rows": out, "sides": sides, "texts": texts}


def running_agreement(rows: Sequence[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
    """(n, agreement, low, high) after each scored row, in run order: how the estimate settles with sample size."""
    return running_share([r.get("binary_match") for r in rows])


def side_latencies(rows: Sequence[dict[str, Any]], p: str, replayed: bool) -> list[float]:
    """One side's latencies: its fresh answers'; a replayed side's recorded ones (0 s: none in the recording)."""
    if replayed:
        return [r[f"{p}_latency_s"] for r in rows if not r.get(f"{p}_error") and r.get(f"{p}_latency_s")]
    return [r.get(f"{p}_latency_s") for r in rows if not r.get(f"{p}_cached")]


# -- page -------------------------------------------------------------------------------------------------------

def _matrix(m: dict[str, Any], a: str, b: str, names: dict[str, str] | None = None) -> str:
    if not m["labels"]:
        return '<p class="muted">no rows</p>'
    shown = [(names or {}).get(label, label) for label in m["labels"]]
    head = [f"{a} ↓ / {b} →", *shown]
    body = [[label, *cells] for label, cells in zip(shown, m["cells"])]
    return _table(head, body, "matrix")


NO_CATEGORY = "(no category)"


def uncategorised(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The fine-grained matrix counts an answer that gave a label but named no category (a JSON policy's bare
    `1`: its categories are `none`, `hate`, …) under its binary label. Those labels, as the page names them."""
    sides = [(r.get(f"{p}_outcome"), r.get(f"{p}_fine")) for r in rows for p in ("a", "b")]
    named = {fine for _, fine in sides if fine is not None}
    bare = {outcome for outcome, fine in sides if fine is None and outcome in ("0", "1")}
    return {label: f"{label} {NO_CATEGORY}" for label in sorted(bare - named)}


def margins_line(m: dict[str, Any] | None) -> str | None:
    """How close the local model came to the other side's label, over the scored label disagreements."""
    if not m or not m.get("scored"):
        return None
    return (f"{m['scored']} scored; local model at the label: {m['near_tie']} near tie(s), "
            f"{m['true_disagreement']} true disagreement(s) (near tie: |Δ log p| < 1 nat)")


def statistics_html(summary: dict[str, Any], latency: dict[str, str] | None = None) -> str:
    """`latency`: a replayed arm's p50, by label, in place of the summary's (which counts fresh answers only)."""
    latency = latency or {}
    backends = summary.get("backends", {})
    labels = [b.get("label", p) for p, b in backends.items()]
    k = summary.get("cohen_kappa") or {}
    kappa = "—" if k.get("value") is None else (
        f"{k['value']:.3f}" + (f" [{k['low']:.3f}, {k['high']:.3f}]" if k.get("low") is not None else ""))
    if k.get("value") is None and k.get("reason"):
        kappa += f" ({k['reason']})"
    m = summary.get("mcnemar") or {}
    # no row with a label from both sides: what agrees is two answers without a label, and the cell says so
    said = f" — {NO_LABEL_AGREEMENT}" if summary.get("n_scored") and summary.get("n_both_labelled") == 0 else ""
    both = None if summary.get("n_both_parsed", 1) else "no row with a label on both sides"
    agreement = [
        ("binary agreement", _pct(summary.get("binary_agreement")) + said),
        ("binary agreement, both parsed", _pct(summary.get("binary_agreement_both_parsed"), both)),
        ("fine-grained agreement", _pct(summary.get("fine_grain_agreement")) + said),
        ("final content byte-identical", _pct(summary.get("content_identical"))),
        ("raw output byte-identical", _pct(summary.get("raw_identical"))),
        ("Cohen's κ (bootstrap 95% CI)", f"{kappa} (n = {k.get('n')})"),
        ("McNemar exact on correctness", mcnemar_text(m) + (f" (n = {m['n']})" if m.get("p_value") is not None and m.get("n") else "")),
    ]
    metric_rows = [["human-labelled rows", *("—" if b.get("n_labelled") is None else f"{b['n_labelled']}/{b.get('n')}"
                                             for b in backends.values())]]
    for name, key in (("parse rate", "parse_rate"), ("refusal rate", "refusal_rate"), ("accuracy", "accuracy"),
                      ("precision", "precision"), ("recall", "recall")):
        metric_rows.append([name, *(_pct(b.get(key), (b.get("undefined") or {}).get(key)) for b in backends.values())])
    metric_rows.append(["F1 (bootstrap 95% CI)", *(f1_text(b) for b in backends.values())])
    metric_rows.append(["why no label", *(", ".join(f"{k} {v}" for k, v in (b.get("parse_failures") or {}).items()) or "—"
                                          for b in backends.values())])
    metric_rows.append(["errors", *(str(b.get("errors")) for b in backends.values())])
    metric_rows.append(["latency p50 (s)", *(latency.get(b.get("label")) or _seconds(b.get("latency_p50_s"))
                                             for b in backends.values())])
    metric_rows.append(["served by", *(", ".join(b.get("served_by") or []) or "—" for b in backends.values())])
    parity = summary.get("prompt_tokens")
    if parity:  # reported prompt tokens against toxcmp's own render of the same request
        metric_rows.append(["prompt tokens (reported vs toxcmp's render)",
                            *(prompt_tokens_phrase(parity.get(label), label in replayed_arms(summary))
                              for label in labels)])
    parting = divergence_line(summary.get("divergence"))
    if parting:
        agreement.append(("where the raw texts part", parting))
    margins = margins_line(summary.get("margins"))
    if margins:
        agreement.append(("label disagreements, the local model's margin", margins))
    headline = headline_of(summary)
    title = (f"<h3>the headline comparison: {html.escape(headline['arm'])} against the reference "
             f"{html.escape(headline['reference'])}</h3>"
             if headline and len(summary.get("comparisons") or {}) > 1 else "")
    return (title + label_notes_html(summary) + _table(["agreement between the sides", "value (95% CI)"], agreement, "stats")
            + _table(["each side against the human labels", *[f"{p.upper()}: {lab}" for p, lab in zip(backends, labels)]],
                     metric_rows, "stats"))


DIVERGENCE_ROWS_SHOWN = 200


def divergence_html(rows: Sequence[dict[str, Any]], labels: Sequence[str], named: bool = False) -> str:
    """Every row of one comparison whose raw texts part: where (character, token), both continuations from
    there, and the local model's log-probabilities of both next tokens (near tie or real). `named`: say which
    comparison (a run with several)."""
    parted = [r for r in rows if r.get("diverge_char") is not None]
    if not parted:
        return ""
    chart = histogram_chart([("first divergent character", histogram([r["diverge_char"] for r in parted], 20))],
                            "where the texts part", " chars")

    def logprob(r: dict[str, Any], p: str) -> str:
        value = r.get(f"{p}_next_logprob")
        return "" if value is None else f" ({value:.2f})"

    body = [[str(r.get("example_id"))[:16], str(r["diverge_char"]),
             "—" if r.get("diverge_token") is None else str(r["diverge_token"]),
             repr(r.get("a_continuation") or ""), repr(r.get("b_continuation") or ""),
             "—" if r.get("a_next_token") is None else f"{r['a_next_token']!r}{logprob(r, 'a')}",
             "—" if r.get("b_next_token") is None else f"{r['b_next_token']!r}{logprob(r, 'b')}",
             r.get("divergence_kind") or "not scored"]
            for r in sorted(parted, key=lambda r: r["diverge_char"])[:DIVERGENCE_ROWS_SHOWN]]
    more = len(parted) - len(body)
    table = _table(["example", "char", "token", f"A {labels[0]} from there", f"B {labels[-1]} from there",
                    "A next token (local log p)", "B next token (local log p)", "kind"], body, "divergence")
    which = f": {html.escape(labels[-1])} against {html.escape(labels[0])}" if named else ""
    return (f'<h2>Where the texts part{which} ({len(parted)} rows)</h2><figure>{chart}<figcaption>first divergent '
            f'character per row</figcaption></figure>' + table
            + (f"<p>{more} more in pairs.parquet</p>" if more > 0 else ""))


def arms_html(summary: dict[str, Any]) -> str:
    """Every arm against the reference: agreement, κ, McNemar (Holm), accuracy difference, its noise floor and the
    equivalence verdict; the pairwise agreement of all arms and Fleiss' κ."""
    comparisons = summary.get("comparisons") or {}
    if len(comparisons) < 2 and (summary.get("repeats") or 1) < 2:
        return ""
    ref = summary.get("reference")
    floors = summary.get("noise_floor") or {}
    body = [[ref, "reference", "—", "—", "—", "—", _pct(floors.get(ref)), "—"]]
    for label, c in comparisons.items():
        k = c.get("cohen_kappa") or {}
        eq = c.get("equivalence") or {}
        acc = c.get("accuracy_difference") or {}
        body.append([label, c.get("verdict"), _pct(c.get("binary_agreement")),
                     "—" if k.get("value") is None else f"{k['value']:.3f}",
                     "—" if (c.get("mcnemar") or {}).get("p_holm") is None else f"{c['mcnemar']['p_holm']:.3g}",
                     ("—" + (f" ({acc['reason']})" if acc.get("reason") else "")) if acc.get("value") is None
                     else f"{100 * acc['value']:+.1f} pts [{100 * acc['low']:+.1f}, {100 * acc['high']:+.1f}]",
                     _pct(floors.get(label)),
                     f"{eq.get('verdict')} ({equivalence_numbers(eq)}; margin {eq.get('margin')})"])
    table = _table(["arm", "verdict", "agreement with the reference", "κ", "McNemar p (Holm)",
                    "accuracy − reference", "noise floor (self-agreement)", "equivalence"], body, "stats")
    pw = summary.get("pairwise_agreement") or {"labels": [], "cells": []}
    matrix = _table(["", *pw["labels"]], [[a, *(_pct(c) for c in row)] for a, row in zip(pw["labels"], pw["cells"])],
                    "matrix") if pw["labels"] else ""
    fk = summary.get("fleiss_kappa") or {}
    fleiss_text = "—" if fk.get("value") is None else f"{fk['value']:.3f}"
    return (f"<h2>Arms (reference: {html.escape(str(ref))})</h2>" + table
            + "<h3>pairwise agreement (all arms, repeat 1)</h3>" + matrix
            + f"<p>Fleiss' κ over {fk.get('arms')} arms: {html.escape(fleiss_text)} (n = {fk.get('n')}"
            + (f"; {html.escape(str(fk['reason']))}" if fk.get("reason") else "") + ")</p>")


def conformance_html(summary: dict[str, Any]) -> str:
    """The ranked conformance table (toxcmp.analysis.conformance): its lead line, a row per arm, the findings."""
    conf = summary.get("conformance") or {}
    if not conf.get("ranked"):
        return ""
    lines = [*conf["ranked"], *([conf["reference"]] if conf.get("reference") else [])]
    findings = "".join(f"<li><b>{html.escape(line['arm'])}</b>: {html.escape('; '.join(line['findings']))}</li>"
                       for line in lines if line["findings"])
    return (f'<h2 id="conformance">Conformance, ranked: which arm to trust</h2>'
            f'<p class="lead">{html.escape(conformance_lead(conf) or "")}</p>'
            + _table(CONFORMANCE_HEAD, [conformance_cells(line) for line in lines], "stats conformance")
            + (f"<ul class=\"findings\">{findings}</ul>" if findings else "")
            + f"<p>order: {html.escape(conf.get('order') or '')}</p>")


def comparisons_of(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(reference, arm, its pair rows) for every comparison, the headline first, then the run's arm order. Rows
    without an `arm` (an older two-sided run, rows scored without arms) are the headline's."""
    headline = headline_of(summary) or {}
    backends = summary.get("backends") or {}
    reference = headline.get("reference") or (backends.get("a") or {}).get("label") or "A"
    first = headline.get("arm") or (backends.get("b") or {}).get("label") or "B"
    grouped: dict[str, list[dict[str, Any]]] = {first: []}
    for arm in summary.get("comparisons") or {}:
        grouped.setdefault(arm, [])
    for r in rows:
        grouped.setdefault(r.get("arm") or first, []).append(r)
    return [(reference, arm, arm_rows) for arm, arm_rows in grouped.items() if arm_rows or arm == first]


def _comparison_title(reference: str, arm: str) -> str:
    return f"<h3>{html.escape(arm)} against the reference {html.escape(reference)}</h3>"


def matrices_html(reference: str, arm: str, rows: Sequence[dict[str, Any]], named: bool) -> str:
    """One comparison's outcome matrix and fine-grained category transitions (reference rows, arm columns)."""
    h = "h4" if named else "h3"
    body = (f"<{h}>outcomes: {html.escape(reference)} (rows) vs {html.escape(arm)} (columns)</{h}>"
            + _matrix(outcome_matrix(rows), "A", "B")
            + f"<{h}>fine-grained category transitions</{h}>"
            + _matrix(fine_matrix(rows), "A", "B", uncategorised(rows)))
    return (f'<section class="comparison matrices" data-arm="{html.escape(arm)}">'
            + (_comparison_title(reference, arm) if named else "") + body + "</section>")


def latency_chart(rows: Sequence[dict[str, Any]], labels: Sequence[str],
                  replayed: Collection[str]) -> tuple[str, str]:
    """Latency per side (chart, caption): fresh answers, a replayed arm's recorded latencies, and which replayed
    arms' recordings hold none."""
    values = {p: side_latencies(rows, p, lab in replayed) for p, lab in zip(("a", "b"), labels)}
    missing = [lab for p, lab in zip(("a", "b"), labels) if lab in replayed and not values[p]]
    caption = "latency per side (fresh answers" + ("; a replayed arm's from its recording)" if replayed else ")")
    if missing:
        caption += f"; no latency in the recording of {', '.join(missing)}"
    if len(missing) == len(labels):
        return f'<p class="muted">latency per side: not in the recordings ({html.escape(", ".join(missing))})</p>', caption
    every = [float(v) for side in values.values() for v in side if v is not None and math.isfinite(float(v))]
    lo, hi = (min(every), max(every)) if every else (None, None)  # both sides on one axis
    series = [(f"{p.upper()}: {lab}", histogram(values[p], 20, lo, hi)) for p, lab in zip(("a", "b"), labels)]
    return histogram_chart(series, "latency per side", " s"), caption


def charts_html(reference: str, arm: str, rows: Sequence[dict[str, Any]], causes: dict[str, int], named: bool,
                replayed: Collection[str] = ()) -> str:
    """One comparison's charts: causes, latency per side, similarity, running agreement."""
    latency_svg, latency_caption = latency_chart(rows, (reference, arm), replayed)
    sims = [("final answer", histogram([r.get("content_similarity") for r in rows], 20, 0.0, 1.0)),
            ("reasoning", histogram([r.get("reasoning_similarity") for r in rows], 20, 0.0, 1.0))]
    which = f"{arm} vs {reference}: " if named else ""
    figures = "".join(f'<figure>{svg}<figcaption>{html.escape(which + cap)}</figcaption></figure>' for svg, cap in (
        (bar_chart(list(causes.items()), "disagreement causes"), "why the sides disagree (rows per cause)"),
        (latency_svg, latency_caption),
        (histogram_chart(sims, "similarity of the two sides"), "content and reasoning similarity (0–1)"),
        (running_chart(running_agreement(rows), "running agreement"),
         "binary agreement vs sample size, with its 95% Wilson band"),
    ))
    return ((_comparison_title(reference, arm) if named else "")
            + f'<div class="charts comparison" data-arm="{html.escape(arm)}">{figures}</div>')


# -- the row browser's filters: one chip per category --------------------------------------------------------

# the causes "error", "refusal" and "parse" are the rows of the Error, Refusal and Parse failure chips where only
# one side has it: one chip each, not a second spelling beside it (the chips' meanings: the template's `tests`)
ROW_CHIP_OF_CAUSE = {"error": "Error", "refusal": "Refusal", "parse": "Parse failure"}
CAUSE_CHIPS = tuple(c for c in CAUSES if c not in ROW_CHIP_OF_CAUSE)
NEAR_TIES = (("Near tie at the label", "margin_kind"), ("Near tie at the parting", "divergence_kind"))


def row_filters(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The chips, in order; a near-tie chip only where the local model scored that kind of row."""
    scored = [name for name, key in NEAR_TIES if any(r.get(key) for r in rows)]
    return ["All", "Disagree", "Refusal", "Parse failure", "Error", *scored, *CAUSE_CHIPS]


def replayed_latency(comparison: tuple[str, str, list[dict[str, Any]]], replayed: set[str]) -> dict[str, str]:
    """The headline comparison's replayed arms' latency p50, by label."""
    reference, arm, rows = comparison
    return {lab: recorded_p50(side_latencies(rows, p, True)) for p, lab in zip(("a", "b"), (reference, arm))
            if lab in replayed}


def build_html(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The page of a run: its pair rows and summary; one arm (an evaluation, `summary["kind"]`): its tidy rows, laid
    out by `toxcmp.report.evaluation_page`."""
    if summary.get("kind") == "evaluation":
        from toxcmp.report.evaluation_page import build_evaluation_html

        return build_evaluation_html(rows, summary)
    meta = summary.get("metadata") or {}
    backends = summary.get("backends") or {}
    labels = [b.get("label", p) for p, b in backends.items()] or ["A", "B"]
    verdict = summary.get("verdict") or ("pass" if summary.get("passed") else "fail")
    comparisons = comparisons_of(rows, summary)  # every comparison's matrices and charts, the headline first
    named = len(comparisons) > 1
    replayed = replayed_arms(summary)
    stored = summary.get("comparisons") or {}
    matrices, charts, partings = [], [], []
    for k, (reference, arm, arm_rows) in enumerate(comparisons):
        causes = ((stored.get(arm) or {}).get("causes") or (summary.get("causes") if k == 0 else None)
                  or (cause_counts([r.get("cause") for r in arm_rows]) if arm_rows else {c: 0 for c in CAUSES}))
        matrices.append(matrices_html(reference, arm, arm_rows, named))
        charts.append(charts_html(reference, arm, arm_rows, causes, named, replayed))
        partings.append(divergence_html(arm_rows, (reference, arm), named))
    filters = row_filters(rows)
    data = {"labels": labels, **page_rows(rows), "filters": filters, "reference": summary.get("reference"),
            "replayed": sorted(replayed), "tokens": row_token_data(summary)}
    return fill({
        "NONCE": secrets.token_urlsafe(16),
        "TITLE": html.escape(f"toxcmp · {' vs '.join(labels)} · {meta.get('run_id') or ''}"),
        "VERDICT_CLASS": html.escape(verdict),
        "VERDICT": html.escape(verdict.upper()),
        "VERDICT_REASON": html.escape(summary.get("verdict_reason") or ""),
        "HEADLINE": html.escape(f"{' vs '.join(labels)} · policy {(meta.get('policy') or {}).get('name')} · model "
                                f"{(meta.get('model') or {}).get('model_id') or (meta.get('model') or {}).get('name')} · "
                                f"{sample_text(summary, meta)} · unparsed count as {summary.get('unparsed_as', 'none')}"),
        "PROVENANCE": html.escape(json.dumps(meta, indent=2, ensure_ascii=False, default=str)),
        "STATISTICS_HEADING": "Agreement and accuracy",
        "STATISTICS": (conformance_html(summary) + arms_html(summary)
                       + statistics_html(summary, replayed_latency(comparisons[0], replayed)) + "".join(partings)
                       + logprob_html(summary)),
        "MATRICES": "".join(matrices),
        "CHARTS": "".join(charts),
        "DATA": embed_json(data),
    })


def rebuild(run_dir: Any) -> Any:
    """(Re)write `report.html` of a run dir from its pairs (or older results) parquet and summary.json; returns its
    path."""
    from pathlib import Path

    from toxcmp.results.io import read_run, read_summary, write_text

    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary.get("kind") == "evaluation":  # one arm: no pairs; its own first answers (results.parquet)
        import polars as pl

        rows = pl.read_parquet(run_dir / "results.parquet").filter(pl.col("repeat") == 0).to_dicts()
    else:
        rows, summary = read_run(run_dir)
    target = run_dir / REPORT_FILE
    write_text(target, build_html(rows, summary))
    return target


def has_display() -> bool:
    import os
    import sys

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
