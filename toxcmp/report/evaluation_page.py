"""`report.html` of one arm (`--backends api`): the arm against the human labels, not against another arm.

The verdict, then accuracy, precision, recall and F1 with their 95 % intervals (as `toxcmp.analysis.scoring.evaluate`
computed them), the arm's answers by human label, charts (where it went wrong, latency, accuracy as the sample
grows) and the row browser over its own answers: what it said, whether that was right, its reasoning. The page's
template, safety rules and parts are the comparison page's (`toxcmp.report.page`); only the layout is its own.
"""

from __future__ import annotations

import html
import json
import secrets
from typing import Any, Sequence

from toxcmp.analysis.matrices import OUTCOMES
from toxcmp.report.page import (_SIDE_KEYS, _finite, _raw_for_page, bar_chart, embed_json, fill, histogram,
                                histogram_chart, label_notes_html, pct, recorded_p50, replayed_arms, running_chart,
                                running_share, sample_text, seconds, table)
from toxcmp.report.logprob_page import logprob_html, row_token_data
from toxcmp.report.text import CONFORMANCE_HEAD, conformance_cells, f1_text, prompt_tokens_phrase, replayed_arms

WRONG = ("missed", "false alarm", "no label")  # why an answer is not the human label (the row browser's causes)
NO_HUMAN_LABEL = "no human label"
SERVED_COLUMNS = [i for i, name in enumerate(CONFORMANCE_HEAD)  # how it was served: no reference to compare with
                  if name not in ("#", "standing", "agreement with the reference", "equivalence")]


def correctness(row: dict[str, Any]) -> tuple[bool | None, str | None]:
    """(right, why not) of one answer against its human label; (None, …) when there is nothing to judge: a failed
    request ("error") or a row without a human label. An answer without a label is wrong (`evaluate`'s rule)."""
    if row.get("error"):
        return None, "error"
    if row.get("toxicity") is None:
        return None, None
    said, truth = row.get("binary"), int(row["toxicity"])
    if said is None:
        return False, "no label"
    if said == truth:
        return True, None
    return False, "missed" if truth == 1 else "false alarm"


def evaluation_rows(rows: Sequence[dict[str, Any]], label: str) -> dict[str, Any]:
    """The arm's answers for the page, in the comparison page's shape with one side: each row's `match` is whether
    the answer is the human label and its `cause` why not."""
    out, sides, texts = [], [], []
    for i, r in enumerate({k: _finite(v) for k, v in row.items()} for row in rows):
        right, why = correctness(r)
        side = {k: r.get(k) for k in _SIDE_KEYS} | {"backend": label}
        side["raw"] = _raw_for_page(r.get("raw"), side["content"], side["reasoning"])
        side["raw_note"] = None if side["raw"] is not None or not r.get("raw") else (
            "same as the final answer" if r.get("raw") == side["content"]
            else "final answer + reasoning with Harmony markers")
        sides.append(side)
        texts.append(r.get("text") or "")
        out.append({"id": r.get("example_id"), "text": i, "truth": r.get("toxicity"), "pair": label, "cause": why,
                    "match": right, "csim": None, "rsim": None, "margin": None, "margin_kind": None,
                    "diverge_char": None, "divergence_kind": None, "sides": [i]})
    return {"rows": out, "sides": sides, "texts": texts}


def evaluation_filters(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The row browser's chips: every answer, the wrong ones (then each way of being wrong), and the rows the
    chips of the comparison page name (refusals, parse failures, errors)."""
    unlabelled = ["No human label"] if any(r.get("toxicity") is None for r in rows) else []
    return ["All", "Wrong", "Refusal", "Parse failure", "Error", *unlabelled, "missed", "false alarm"]


def latencies(rows: Sequence[dict[str, Any]], replayed: bool) -> list[float]:
    """Fresh answers' latencies; a replayed arm's recorded ones (0 s: none in the recording)."""
    if replayed:
        return [r["latency_s"] for r in rows if not r.get("error") and r.get("latency_s")]
    return [r["latency_s"] for r in rows if not r.get("cached") and r.get("latency_s") is not None]


def statistics_html(summary: dict[str, Any], latency: str | None = None) -> str:
    """The arm against the human labels, every statistic with its 95 % interval and n, blank with its reason where
    it has no value; then how the arm was served (its conformance line, without a reference)."""
    b = summary["backends"]["a"]
    why = b.get("undefined") or {}
    cm = b["confusion"]
    label = b["label"]
    floor = (summary.get("noise_floor") or {}).get(label)
    parity = (summary.get("prompt_tokens") or {}).get(label)
    body = [["accuracy", pct(b["accuracy"], why.get("accuracy"))],
            ["precision", pct(b["precision"], why.get("precision"))],
            ["recall", pct(b["recall"], why.get("recall"))],
            ["F1 (percentile bootstrap 95% CI)", f1_text(b)],
            ["parse rate", pct(b["parse_rate"])], ["refusal rate", pct(b["refusal_rate"])],
            ["TP / FP / FN / TN", " / ".join(f"{cm[k]:g}" for k in ("tp", "fp", "fn", "tn"))],
            ["no label", str(cm["no_label"])],
            ["why no label", ", ".join(f"{k} {v}" for k, v in (b.get("parse_failures") or {}).items()) or "—"],
            ["human-labelled rows", f"{summary.get('n_labelled')}/{summary.get('n')}"]]
    if floor:
        body.append(["agreement with itself (repeats)", pct(floor)])
    body += [["errors", str(b["errors"])], ["cached", f"{b['cached']}/{summary.get('n')}"],
             ["latency p50 (s)", latency or seconds(b.get("latency_p50_s"))],
             ["served by", ", ".join(b.get("served_by") or []) or "—"]]
    if parity:
        body.append(["prompt tokens (reported vs toxcmp's render)",
                     prompt_tokens_phrase(parity, label in replayed_arms(summary))])
    return (label_notes_html(summary) + table([f"{label} against the human labels", "value (95% CI)"], body,
                                              "stats evaluation") + served_html(summary))


def served_html(summary: dict[str, Any]) -> str:
    """The arm's own conformance line: where its reasoning came from, finish reasons, truncations, refused
    parameters, reasoning effort, prompt-token parity — and the findings against it."""
    line = (summary.get("conformance") or {}).get("reference")
    if not line:
        return ""
    cells = conformance_cells(line)
    findings = "; ".join(line.get("findings") or [])
    return ("<h3>how it was served</h3>"
            + table([CONFORMANCE_HEAD[i] for i in SERVED_COLUMNS], [[cells[i] for i in SERVED_COLUMNS]],
                    "stats conformance")
            + (f'<p class="findings">{html.escape(findings)}</p>' if findings else ""))


def answers_matrix(rows: Sequence[dict[str, Any]], label: str) -> str:
    """Rows by human label, columns by what the arm said (a label, a refusal, an unparsed answer, an error)."""
    truths = [t for t in ("0", "1", NO_HUMAN_LABEL)
              if any((NO_HUMAN_LABEL if r.get("toxicity") is None else str(r["toxicity"])) == t for r in rows)]
    said = [o for o in OUTCOMES if any(r.get("outcome") == o for r in rows)]
    if not truths:
        return '<p class="muted">no rows</p>'
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (NO_HUMAN_LABEL if r.get("toxicity") is None else str(r["toxicity"]), r.get("outcome"))
        counts[key] = counts.get(key, 0) + 1
    return (f"<h3>answers: human label (rows) vs {html.escape(label)} (columns)</h3>"
            + table([f"human ↓ / {label} →", *said], [[t, *(counts.get((t, o), 0) for o in said)] for t in truths],
                    "matrix"))


def categories_matrix(rows: Sequence[dict[str, Any]], label: str) -> str:
    """The categories the arm named, by human label (a label without a category counts under its label)."""
    named: dict[str, int] = {}
    for r in rows:
        if r.get("outcome") in ("0", "1") and r.get("fine"):
            named[r["fine"]] = named.get(r["fine"], 0) + 1
    if len(named) < 2:  # one category (a binary policy's "none" beside its bare labels) says nothing new
        return ""
    order = sorted(named, key=lambda k: (-named[k], k))
    truths = sorted({NO_HUMAN_LABEL if r.get("toxicity") is None else str(r["toxicity"]) for r in rows})
    body = [[t, *(sum(1 for r in rows if r.get("fine") == c and r.get("outcome") in ("0", "1")
                      and (NO_HUMAN_LABEL if r.get("toxicity") is None else str(r["toxicity"])) == t) for c in order)]
            for t in truths]
    return ("<h3>categories it named, by human label</h3>"
            + table([f"human ↓ / {label} →", *order], body, "matrix"))


def charts_html(rows: Sequence[dict[str, Any]], label: str, replayed: bool) -> str:
    """Where it went wrong, its latency, and its accuracy as the sample grows (Wilson 95 % band)."""
    judged = [correctness(r) for r in rows]
    wrong = [("right", sum(right is True for right, _ in judged))] + [
        (w, sum(why == w for _, why in judged)) for w in (*WRONG, "error")]
    values = latencies(rows, replayed)
    if replayed and not values:
        latency = f'<p class="muted">latency: not in the recording of {html.escape(label)}</p>'
    else:
        latency = histogram_chart([(f"A: {label}", histogram(values, 20))], "latency", " s")
    caption = "latency (fresh answers" + ("; recorded by the recording it replays)" if replayed else ")")
    figures = "".join(f"<figure>{svg}<figcaption>{html.escape(cap)}</figcaption></figure>" for svg, cap in (
        (bar_chart(wrong, "its answers against the human labels"),
         "right, and why not: missed (toxic said 0), false alarm (not toxic said 1), no label, error"),
        (latency, caption),
        (running_chart(running_share([right for right, _ in judged]), "running accuracy"),
         "accuracy against the human labels vs sample size, with its 95% Wilson band"),
    ))
    return f'<div class="charts evaluation" data-arm="{html.escape(label)}">{figures}</div>'


def build_evaluation_html(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The page of one arm: its tidy rows (repeat 0, one per example) and its `evaluate` summary."""
    meta = summary.get("metadata") or {}
    b = summary["backends"]["a"]
    label = b.get("label") or summary.get("arm") or "A"
    rows = [r for r in rows if not r.get("repeat")]
    replayed = label in replayed_arms(summary)
    verdict = summary.get("verdict") or "inconclusive"
    latency = recorded_p50(latencies(rows, True)) if replayed else None
    data = {"labels": [label], **evaluation_rows(rows, label), "filters": evaluation_filters(rows),
            "reference": "human labels", "replayed": [label] if replayed else [], "evaluation": True,
            "tokens": row_token_data(summary)}
    model = meta.get("model") or {}
    return fill({
        "NONCE": secrets.token_urlsafe(16),
        "TITLE": html.escape(f"toxcmp · {label} against the human labels · {meta.get('run_id') or ''}"),
        "VERDICT_CLASS": html.escape(verdict),
        "VERDICT": html.escape(verdict.upper()),
        "VERDICT_REASON": html.escape(summary.get("verdict_reason") or ""),
        "HEADLINE": html.escape(f"{label} against the human labels · policy {(meta.get('policy') or {}).get('name')} · "
                                f"model {model.get('model_id') or model.get('name')} · {sample_text(summary, meta)} · "
                                f"unparsed count as {summary.get('unparsed_as', 'none')}"),
        "PROVENANCE": html.escape(json.dumps(meta, indent=2, ensure_ascii=False, default=str)),
        "STATISTICS_HEADING": "Against the human labels",
        "STATISTICS": statistics_html(summary, latency) + logprob_html(summary),
        "MATRICES": answers_matrix(rows, label) + categories_matrix(rows, label),
        "CHARTS": charts_html(rows, label, replayed),
        "DATA": embed_json(data),
    })
