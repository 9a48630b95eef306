"""Results on screen: the console report (verdict, agreement, each backend, causes, arms) in rich tables.

Files are `toxcmp.results.io`; the live view while a run runs is `toxcmp.report.live`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toxcmp.report.text import NO_LABEL_AGREEMENT, divergence_line, equivalence_numbers, f1_text, mcnemar_text, share_text
from toxcmp.analysis.label_probs import label_prob_lines
from toxcmp.analysis.logprobs import logprob_phrase
from toxcmp.analysis.token_parity import parity_phrase
from toxcmp.report.text import (CONFORMANCE_HEAD, conformance_cells, conformance_lead, prompt_tokens_phrase,
                                replayed_arms)
from toxcmp.results.schema import headline_of



# -- console report -------------------------------------------------------------------------------------------------

def _pct(p: dict[str, Any] | None, reason: str | None = None) -> str:
    return escape(share_text(p, reason))


def _why(side: dict[str, Any], name: str) -> str | None:
    return (side.get("undefined") or {}).get(name)


def agreement_table(summary: dict[str, Any]) -> Table:
    title = "agreement between backends"
    headline = headline_of(summary)
    if len(summary.get("comparisons") or {}) > 1 and headline:  # which of the comparisons these numbers are
        title += f" (headline: {escape(headline['arm'])} against the reference {escape(headline['reference'])})"
    t = Table(title=title, title_justify="left")
    t.add_column("statistic", overflow="fold")
    t.add_column("value (95 % CI)", overflow="fold")
    t.add_column("n", justify="right", overflow="fold")
    k = summary["cohen_kappa"]
    kappa = (f"— ({k['reason']})" if k.get("reason") else "—") if k["value"] is None else (
        f"{k['value']:.3f}" + (f" [{k['low']:.3f}, {k['high']:.3f}]" if k["low"] is not None else "")
        + (f" ({k['undefined_resamples']} undefined resamples left out)" if k.get("undefined_resamples") else ""))
    m = summary["mcnemar"]
    # no row with a label from both sides: what agrees is two answers without a label, which the cell must say
    no_labels = bool(summary.get("n_scored")) and summary.get("n_both_labelled") == 0
    said = f" — {NO_LABEL_AGREEMENT}" if no_labels else ""
    for name, key in (("final content byte-identical", "content_identical"), ("raw output byte-identical", "raw_identical")):
        if key in summary:
            t.add_row(name, _pct(summary[key]), str(summary[key]["n"]))
    t.add_row("binary agreement", _pct(summary["binary_agreement"]) + said, str(summary["binary_agreement"]["n"]))
    t.add_row("fine-grained agreement", _pct(summary["fine_grain_agreement"]) + said, str(summary["fine_grain_agreement"]["n"]))
    t.add_row("binary agreement, both parsed", _pct(summary["binary_agreement_both_parsed"],
                                                    "no row with a label on both sides" if not summary["n_both_parsed"] else None),
              str(summary["n_both_parsed"]))
    t.add_row("Cohen's κ (bootstrap CI)", kappa, str(k["n"]))
    t.add_row("McNemar exact (correctness)", escape(mcnemar_text(m)), str(m.get("n", summary["n_scored"])))
    for name, key in (("final-content similarity", "content_similarity_mean"), ("reasoning similarity", "reasoning_similarity_mean")):
        value = summary.get(key)
        t.add_row(name, "—" if value is None else f"{value:.3f}", "")
    return t


def backend_table(summary: dict[str, Any]) -> Table:
    """Metrics as rows, backends as columns: stays readable in an 80-column terminal."""
    t = Table(title="each backend against the human labels (95 % CI)", title_justify="left")
    t.add_column("metric", overflow="fold")
    backends = summary["backends"]
    for p, b in backends.items():
        t.add_column(f"{p.upper()}: {escape(b['label'])}", overflow="fold")
    rows = [("parse rate", lambda b: _pct(b["parse_rate"])), ("refusal rate", lambda b: _pct(b["refusal_rate"])),
            *_accuracy_rows(),
            ("TP / FP / FN / TN", lambda b: " / ".join(_fmt_count(b["confusion"][k]) for k in ("tp", "fp", "fn", "tn"))),
            ("no label", lambda b: str(b["confusion"]["no_label"])),
            ("why no label", lambda b: escape(", ".join(f"{k} {v}" for k, v in b.get("parse_failures", {}).items())) or "—"),
            ("errors", lambda b: str(b["errors"])),
            ("cached", lambda b: f"{b['cached']}/{summary['n']}"),
            ("latency p50 (s), its own", lambda b: _seconds(b.get("latency_p50_s"))),
            ("queue p50 (s), before it", lambda b: _seconds(b.get("queue_p50_s"))),
            ("served by", lambda b: escape(", ".join(b["served_by"])) or "—")]
    for name, cell in rows:
        t.add_row(name, *(cell(b) for b in backends.values()))
    return t


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _accuracy_rows() -> list[tuple[str, Any]]:
    """Accuracy, precision, recall, F1 against the human labels: blank with the reason where undefined."""
    return [("human-labelled rows", lambda b: "—" if b.get("n_labelled") is None else f"{b['n_labelled']}/{b['n']}"),
            ("accuracy", lambda b: _pct(b["accuracy"], _why(b, "accuracy"))),
            ("precision", lambda b: _pct(b["precision"], _why(b, "precision"))),
            ("recall", lambda b: _pct(b["recall"], _why(b, "recall"))),
            ("F1 (percentile bootstrap CI)", lambda b: escape(f1_text(b)))]


def _fmt_count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def causes_table(summary: dict[str, Any]) -> Table:
    t = Table(title="why they disagree", title_justify="left")
    for col in ("cause", "count", "top examples (id · truth · A · B)"):
        t.add_column(col, overflow="fold")
    for name, count in summary["causes"].items():
        examples = summary["cause_examples"].get(name, [])
        lines = [f"{escape(e['example_id'][:12])} · {'—' if e['truth'] is None else e['truth']} · {escape(e['a'])} · {escape(e['b'])}"
                 + (f" · {e['margin']}" if e.get("margin") else "")
                 + f"\n  [dim]{escape(e['text'])!s}" + (f" · {escape(e['reasoning'])}" if e.get("reasoning") else "") + "[/]"
                 for e in examples]
        t.add_row(name, str(count), "\n".join(lines) or "—")
    return t


_VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "incomplete": "yellow"}


def verdict_line(summary: dict[str, Any]) -> str:
    """The verdict and why, in one line of rich markup."""
    verdict = summary.get("verdict") or ("pass" if summary.get("passed") else "fail")
    reason = summary.get("verdict_reason") or ""
    return f"[bold {_VERDICT_STYLE.get(verdict, 'white')}]{verdict.upper()}[/]: {escape(reason)}"


def arms_table(summary: dict[str, Any]) -> Table | None:
    """Each arm against the reference, with its noise floor and equivalence verdict (shown with ≥ 3 arms or repeats)."""
    comparisons = summary.get("comparisons") or {}
    if len(comparisons) < 2 and (summary.get("repeats") or 1) < 2:
        return None
    t = Table(title=f"arms against the reference {escape(str(summary.get('reference')))} "
                    f"(equivalence margin {summary.get('margin')}, Holm-corrected)", title_justify="left")
    for col in ("arm", "verdict", "agreement", "κ", "McNemar p", "noise floor", "equivalence"):
        t.add_column(col, overflow="fold")
    floors = summary.get("noise_floor") or {}
    t.add_row(escape(str(summary.get("reference"))), "reference", "—", "—", "—", _pct(floors.get(summary.get("reference"))), "—")
    for label, c in comparisons.items():
        k = c.get("cohen_kappa") or {}
        eq = c.get("equivalence") or {}
        p_holm = (c.get("mcnemar") or {}).get("p_holm")
        t.add_row(escape(label), c["verdict"], _pct(c["binary_agreement"]), "—" if k.get("value") is None else f"{k['value']:.3f}",
                  "—" if p_holm is None else f"{p_holm:.3g}", _pct(floors.get(label)),
                  f"{eq.get('verdict')} ({equivalence_numbers(eq)})")
    fk = summary.get("fleiss_kappa") or {}
    t.caption = (f"Fleiss' κ over {fk.get('arms')} arms: "
                 + ("—" if fk.get("value") is None else f"{fk['value']:.3f}") + f" (n = {fk.get('n')})")
    return t


_CONFORMANCE_COLUMNS = ("#", "arm", "standing", "agreement", "noise floor", "equivalence", "reasoning from",
                        "finish", "cut off", "no final", "refused", "effort", "prompt tokens =")
assert len(_CONFORMANCE_COLUMNS) == len(CONFORMANCE_HEAD)


CONFORMANCE_WIDE = 160  # columns a terminal needs for one row per arm; narrower, one row per fact


def conformance_table(summary: dict[str, Any], width: int | None = None) -> Table | None:
    """Every arm's fidelity facts, ranked (toxcmp.analysis.conformance); the findings against each in the caption.
    On a terminal narrower than CONFORMANCE_WIDE (`width`), arms are columns and facts rows, so 80 columns read."""
    conf = summary.get("conformance") or {}
    lines = [*(conf.get("ranked") or []), *([conf["reference"]] if conf.get("reference") else [])]
    if not conf.get("ranked"):
        return None
    t = Table(title="conformance, ranked: which arm to trust for this model and policy", title_justify="left")
    cells = [conformance_cells(line) for line in lines]
    if width is not None and width < CONFORMANCE_WIDE:
        t.add_column("", style="bold", overflow="fold")
        for row in cells:
            t.add_column(escape(f"{row[0]}. {row[1]}" if row[0] != "ref" else f"ref. {row[1]}"), overflow="fold")
        for i, fact in enumerate(CONFORMANCE_HEAD[2:], start=2):
            t.add_row(escape(fact), *(escape(row[i]) for row in cells))
    else:
        for col in _CONFORMANCE_COLUMNS:  # CONFORMANCE_HEAD, shortened for a terminal (the page has it in full)
            t.add_column(col, overflow="fold")
        for row in cells:
            t.add_row(*(escape(c) for c in row))
    found = [f"{line['arm']}: {'; '.join(line['findings'])}" for line in lines if line["findings"]]
    found += [f"{line['arm']} (note): {note}" for line in lines for note in line.get("notes") or []]
    t.caption = escape("\n".join([conformance_lead(conf) or "", *found]))
    t.caption_justify = "left"
    return t


def evaluation_table(summary: dict[str, Any]) -> Table:
    """One arm against the human labels (`--backends api`): every statistic with its 95 % CI and its n."""
    b = summary["backends"]["a"]
    t = Table(title=f"{escape(b['label'])} against the human labels (95 % CI)", title_justify="left")
    for col, justify in (("statistic", "left"), ("value (95 % CI)", "left"), ("n", "right")):
        t.add_column(col, justify=justify, overflow="fold")
    cm = b["confusion"]
    t.add_row("accuracy", _pct(b["accuracy"], _why(b, "accuracy")), str(b["accuracy"]["n"] or b.get("n_labelled", "")))
    t.add_row("precision", _pct(b["precision"], _why(b, "precision")), str(b["precision"]["n"]))
    t.add_row("recall", _pct(b["recall"], _why(b, "recall")), str(b["recall"]["n"]))
    t.add_row("F1 (percentile bootstrap CI)", escape(f1_text(b)), str(b.get("n_labelled", "")))
    t.add_row("parse rate", _pct(b["parse_rate"]), str(b["parse_rate"]["n"]))
    t.add_row("refusal rate", _pct(b["refusal_rate"]), str(b["refusal_rate"]["n"]))
    t.add_row("TP / FP / FN / TN", " / ".join(_fmt_count(cm[k]) for k in ("tp", "fp", "fn", "tn")), "")
    t.add_row("no label", str(cm["no_label"]), "")
    t.add_row("why no label", escape(", ".join(f"{k} {v}" for k, v in b.get("parse_failures", {}).items())) or "—", "")
    floor = (summary.get("noise_floor") or {}).get(summary.get("arm"))
    if floor:
        t.add_row("agreement with itself (repeats)", _pct(floor), str(floor["n"]))
    t.add_row("human-labelled rows", f"{summary.get('n_labelled')}/{summary['n']}", "")
    t.add_row("errors", str(b["errors"]), "")
    t.add_row("cached", f"{b['cached']}/{summary['n']}", "")
    t.add_row("served by", escape(", ".join(b["served_by"])) or "—", "")
    if summary.get("label_notes"):
        t.caption = escape("; ".join(summary["label_notes"]))
        t.caption_justify = "left"
    return t


def _header(summary: dict[str, Any], labels: str) -> str:
    meta = summary.get("metadata", {})
    return (f"[bold]{escape(labels)}[/] · policy {escape(str(meta.get('policy', {}).get('name')))} · "
            f"model {escape(str(meta.get('model', {}).get('model_id') or meta.get('model', {}).get('name') or '?'))} · "
            f"n = {summary['n']} · labels without a verdict count as {summary.get('unparsed_as', 'none')}")


def render_evaluation(summary: dict[str, Any], console: Console) -> None:
    meta = summary.get("metadata", {})
    console.print(verdict_line(summary), soft_wrap=True)
    console.print(_header(summary, f"{summary['backends']['a']['label']} against the human labels"))
    console.print(evaluation_table(summary))
    conformance = conformance_table(summary, console.width)
    if conformance is not None:
        console.print(conformance)
    for line in label_prob_lines(summary):
        console.print(escape(line), soft_wrap=True, highlight=False)
    for label, asked in (summary.get("logprobs") or {}).items():
        console.print(escape(logprob_phrase(label, asked)), soft_wrap=True, highlight=False)
    for label, parity in (summary.get("prompt_tokens") or {}).items():
        console.print(f"prompt tokens, {escape(label)}: {escape(prompt_tokens_phrase(parity, label in replayed_arms(summary)))}",
                      soft_wrap=True)
    console.print(verdict_line(summary) + (f" · {escape(str(meta.get('reason')))}" if meta.get("reason") else ""),
                  soft_wrap=True)


def render_report(summary: dict[str, Any], console: Console) -> None:
    if summary.get("kind") == "evaluation":  # one arm against the human labels (toxcmp.analysis.scoring.evaluate)
        render_evaluation(summary, console)
        return
    meta = summary.get("metadata", {})
    labels = " vs ".join(b["label"] for b in summary["backends"].values())
    console.print(verdict_line(summary), soft_wrap=True)
    console.print(_header(summary, labels))
    for note in summary.get("label_notes") or []:  # the headline's caveats, before any number
        if note not in (summary.get("verdict_reason") or ""):
            console.print(f"[bold yellow]{escape(note)}[/]", soft_wrap=True)
    console.print(agreement_table(summary))
    console.print(backend_table(summary))
    console.print(causes_table(summary))
    arms = arms_table(summary)
    if arms is not None:
        console.print(arms)
    conformance = conformance_table(summary, console.width)
    if conformance is not None:
        console.print(conformance)
    line = divergence_line(summary.get("divergence"))
    if line:
        console.print(line, soft_wrap=True)
    for label, parity in (summary.get("token_parity") or {}).items():
        console.print(escape(parity_phrase(label, parity.get("reference"), parity)), soft_wrap=True, highlight=False)
    for line in label_prob_lines(summary):
        console.print(escape(line), soft_wrap=True, highlight=False)
    for label, asked in (summary.get("logprobs") or {}).items():
        console.print(escape(logprob_phrase(label, asked)), soft_wrap=True, highlight=False)
    for label, parity in (summary.get("prompt_tokens") or {}).items():  # reported vs toxcmp's own render
        console.print(f"prompt tokens, {escape(label)}: {escape(prompt_tokens_phrase(parity, label in replayed_arms(summary)))}",
                      soft_wrap=True)
    mk = summary.get("margins", {})
    if mk.get("scored"):
        console.print(f"local-model margin on label disagreements: {mk['near_tie']} near-tie, "
                      f"{mk['true_disagreement']} true disagreement (near-tie: |Δ log p| < 1 nat)")
    console.print(verdict_line(summary) + (f" · {escape(str(meta.get('reason')))}" if meta.get("reason") else ""),
                  soft_wrap=True)
