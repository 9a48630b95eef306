"""Responses → result rows → summary. Pure functions shared by `compare` and `rescore`.

A row holds one example and both backends' answers under the prefixes `a_` and `b_`. Everything derived
(verdicts, matches, similarities, cause) is recomputed from the recorded text, so a row can always be rescored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from rapidfuzz.distance import Indel

from toxcmp.analysis import metrics
from toxcmp.analysis.divergence import TOKEN_COLUMNS, summarize_divergence, text_fields
from toxcmp.analysis.diagnosis import CAUSES, Side, cause, cause_counts, fine_outcome, outcome
from toxcmp.analysis.prompt_tokens import reported_usage
from toxcmp.domain.parsing import parse_output, parse_verdict, read_answer, verdict_of
from toxcmp.domain.policies import Policy
from toxcmp.domain.responses import ModelResponse
from toxcmp.analysis.verdict import (DEFAULT_MIN_LABELLED, NO_BOTH_LABELLED, NO_LABELLED_ROWS, SideLabels,
                                    decide, decide_evaluation)

SIDES = ("a", "b")
UNPARSED_AS = ("none", "0", "1")  # "0" is the recorded study's way: no label counts as "not toxic"
RESPONSE_FIELDS = ("raw", "content", "reasoning", "latency_s", "cached", "error", "served_by", "prompt_hash",
                   "finish_reason", "retries", "batch_size", "batch_latency_s", "reasoning_source")
RESPONSE_FIELDS += ("prompt_tokens", "completion_tokens")  # usage as the backend reported it (analysis.prompt_tokens)
RESPONSE_FIELDS += ("queue_s",)  # api: time waiting for an in-flight slot, never in latency_s
RESPONSE_FIELDS += ("rejected_parameters",)  # asked for, refused by the server (a 400/422), not sent: comma-joined
RESPONSE_FIELDS += ("logprobs_asked", "logprob_tokens")  # token log p: top K asked, tokens sent (tokens.parquet)
VERDICT_FIELDS = ("binary", "fine", "parse_ok", "parse_error", "parse_failure", "refusal", "outcome")


def response_fields(response: ModelResponse) -> dict[str, Any]:
    return {"raw": response.raw_text, "content": response.content, "reasoning": response.reasoning,
            "latency_s": float(response.latency_s), "cached": bool(response.cached), "error": response.error,
            "served_by": response.served_by, "prompt_hash": response.prompt_hash,
            "finish_reason": response.finish_reason, "retries": int(response.retries),
            **reported_usage(response.extra),  # prompt_tokens, completion_tokens: None when not reported
            # a batched backend: latency_s is this row's share of the batch; the batch's own wall time beside it
            "batch_size": (response.extra or {}).get("batch_size"),
            "batch_latency_s": (response.extra or {}).get("batch_latency_s"),
            # where the reasoning came from, as the backend read it off the wire (REASONING_SOURCES)
            "reasoning_source": (response.extra or {}).get("reasoning_source"),
            "rejected_parameters": ",".join((response.extra or {}).get("rejected_parameters") or ()) or None,
            "queue_s": (response.extra or {}).get("queue_s"),
            **logprob_fields(response.extra)}


def logprob_fields(extra: dict[str, Any] | None) -> dict[str, Any]:
    """What the backend sent of its token log-probabilities: `logprobs_asked` (top K asked for; None: not asked),
    `logprob_tokens` (tokens that came with one; None: none sent) and the tokens themselves (`token_logprobs`,
    written to tokens.parquet, not to results.parquet)."""
    extra = extra or {}
    tokens = extra.get("token_logprobs")
    return {"logprobs_asked": extra.get("logprobs_asked"), "logprob_tokens": None if tokens is None else len(tokens),
            "token_logprobs": tokens}


def verdict_fields(recorded: dict[str, Any], policy: Policy, harmony: bool | None, unparsed_as: str = "none") -> dict[str, Any]:
    """Parse one side's recorded output. Raw text is the source of truth when present; else the final content."""
    if recorded.get("error"):
        return {"binary": None, "fine": None, "parse_ok": False, "parse_error": f"backend error: {recorded['error']}",
                "parse_failure": "error", "refusal": False, "outcome": "error"}
    raw = recorded.get("raw") or ""
    finish = recorded.get("finish_reason")
    if raw:  # the text as it arrived, with the reasoning a server sent in a field beside it
        _, verdict = parse_output(raw, policy, harmony, finish, reasoning=recorded.get("reasoning"))
    else:  # no raw text recorded (a study file's final answers): the final answer as recorded, never re-split
        parts = read_answer(recorded.get("content") or "", recorded.get("reasoning"), split=False)
        verdict = verdict_of(parts, policy, finish)
    binary, fine = verdict.binary_label, verdict.fine_grain_label
    if binary is None and unparsed_as != "none":
        forced = parse_verdict(unparsed_as, policy)
        binary, fine = forced.binary_label, forced.fine_grain_label
    side = Side(binary, fine, verdict.parse_ok, verdict.refusal, None)
    return {"binary": binary, "fine": fine, "parse_ok": verdict.parse_ok, "parse_error": verdict.parse_error,
            "parse_failure": verdict.failure, "refusal": verdict.refusal, "outcome": outcome(side)}


def side_of(row: dict[str, Any], p: str) -> Side:
    return Side(row[f"{p}_binary"], row[f"{p}_fine"], bool(row[f"{p}_parse_ok"]), bool(row[f"{p}_refusal"]),
                row.get(f"{p}_error"))


def similarity(x: str | None, y: str | None) -> float:
    """Normalized Indel similarity in [0, 1] (rapidfuzz); two empty texts are identical."""
    return float(Indel.normalized_similarity(x or "", y or ""))


def identical(x: str | None, y: str | None) -> bool | None:
    """Byte identity of two recorded texts; None (undefined) when either side recorded none."""
    if x is None or y is None:
        return None
    return x == y


def derive(row: dict[str, Any], policy: Policy, harmony: bool | None, unparsed_as: str = "none",
           sides: Sequence[tuple[Policy, bool | None]] | None = None) -> dict[str, Any]:
    """Fill in verdicts, matches, similarities and cause from the recorded fields of both sides. `sides`: each
    side's own (policy, harmony) when the two arms answer different policies or models."""
    out = dict(row)
    for p, (side_policy, side_harmony) in zip(SIDES, sides or ((policy, harmony), (policy, harmony))):
        recorded = {k: row.get(f"{p}_{k}") for k in RESPONSE_FIELDS}
        out.update({f"{p}_{k}": v for k, v in verdict_fields(recorded, side_policy, side_harmony, unparsed_as).items()})
    a, b = side_of(out, "a"), side_of(out, "b")
    errored = bool(a.error or b.error)
    out["binary_match"] = None if errored else outcome(a) == outcome(b)
    out["fine_match"] = None if errored else fine_outcome(a) == fine_outcome(b)
    out["content_similarity"] = None if errored else similarity(out.get("a_content"), out.get("b_content"))
    no_reasoning = not (out.get("a_reasoning") or out.get("b_reasoning"))  # similarity of nothing is undefined
    out["reasoning_similarity"] = None if errored or no_reasoning else similarity(out.get("a_reasoning"), out.get("b_reasoning"))
    out["content_identical"] = None if errored else identical(out.get("a_content"), out.get("b_content"))
    out["raw_identical"] = None if errored else identical(out.get("a_raw") or None, out.get("b_raw") or None)
    # an empty raw output is one that was not recorded (a study file has final answers only): undefined, as for
    # raw_identical
    out.update(text_fields(None if errored else out.get("a_raw") or None, None if errored else out.get("b_raw") or None))
    if out["diverge_char"] is None:  # a token divergence explains only texts that differ
        out.update({k: None for k in TOKEN_COLUMNS})
    for k in TOKEN_COLUMNS:
        out.setdefault(k, None)
    out["cause"] = cause(a, b)
    if out["cause"] not in ("label_flip", "fine_grain_only"):  # a margin only explains a label disagreement
        out["margin_nats"] = out["margin_kind"] = None
    out.setdefault("margin_nats", None)
    out.setdefault("margin_kind", None)
    return out


# -- summary ---------------------------------------------------------------------------------------------------

def _prop(p: metrics.Proportion) -> dict[str, Any]:
    return {"value": _num(p.value), "low": _num(p.low), "high": _num(p.high), "successes": p.successes, "n": p.n}


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)


@dataclass(frozen=True)
class Scored:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


def _labelled(row: dict[str, Any]) -> bool:
    """The row has a human label to score against (`toxicity` is None where the dataset has none)."""
    return row.get("toxicity") is not None


def side_stats(rows: Sequence[dict[str, Any]], prefix: str, label: str, resamples: int = 2000) -> dict[str, Any]:
    """One side against the human labels: parse and refusal rates, accuracy, precision, recall, F1 (with its
    bootstrap CI) and the confusion matrix. `prefix`: "a_"/"b_" for pair rows, "" for one arm's tidy rows.
    A statistic without a value says why in `undefined` (no labelled rows, no labels from this side, …)."""
    def f(key: str) -> str:  # a field name on this side
        return f"{prefix}{key}"

    ok = [r for r in rows if not r[f("error")]]
    w_ok = [float(r.get("weight") or 1.0) for r in ok]
    truth = [int(r["toxicity"]) if _labelled(r) else None for r in ok]
    predicted = [r[f("binary")] for r in ok]
    report = metrics.classification_report(truth, predicted, w_ok)
    f1 = metrics.f1_with_bootstrap(truth, predicted, w_ok, resamples=resamples)
    cm = report.confusion
    parsed = sum(bool(r[f("parse_ok")]) for r in ok)
    undefined = dict(report.reasons)
    if report.reasons.get("accuracy") == metrics.NO_PREDICTIONS:
        undefined = {k: f"{metrics.NO_PREDICTIONS}: {parsed} of {len(ok)} answers parsed" for k in undefined}
    latencies = sorted(float(r[f("latency_s")] or 0.0) for r in ok if not r[f("cached")])
    return {
        "label": label,
        "n": len(ok), "errors": len(rows) - len(ok), "n_labelled": len(ok) - report.unlabelled, "parsed": parsed,
        "parse_rate": _prop(metrics.weighted_proportion([bool(r[f("parse_ok")]) for r in ok], w_ok)),
        "refusal_rate": _prop(metrics.weighted_proportion([bool(r[f("refusal")]) for r in ok], w_ok)),
        "accuracy": _prop(report.accuracy), "precision": _prop(report.precision), "recall": _prop(report.recall),
        "f1": _num(report.f1),
        "f1_ci": {"low": _num(f1.low), "high": _num(f1.high), "undefined_resamples": f1.undefined_resamples,
                  "reason": None if math.isnan(report.f1) else f1.reason, "method": "percentile bootstrap"},
        "undefined": undefined,  # statistic → why it has no value
        "confusion": {"tp": round(cm.tp, 4), "fp": round(cm.fp, 4), "fn": round(cm.fn, 4), "tn": round(cm.tn, 4),
                      "no_label": cm.missing},
        "cached": sum(bool(r[f("cached")]) for r in rows),
        "latency_p50_s": _num(latencies[len(latencies) // 2]) if latencies else None,
        "queue_p50_s": _median([r.get(f("queue_s")) for r in ok if not r[f("cached")]]),
        "served_by": sorted({r[f("served_by")] for r in rows if r.get(f("served_by"))}),
        "retries": sum(int(r.get(f("retries")) or 0) for r in rows),
        "parse_failures": _failure_counts(r.get(f("parse_failure")) for r in ok),
    }


def _median(values: Sequence[Any]) -> float | None:
    """The upper median of the values reported (None: none was)."""
    present = sorted(float(v) for v in values if v is not None)
    return _num(present[len(present) // 2]) if present else None


def summarize(rows: Sequence[dict[str, Any]], labels: Sequence[str], threshold: float = 0.95,
              kappa_resamples: int = 2000, top_examples: int = 3, status: str = "complete",
              min_labelled: float = DEFAULT_MIN_LABELLED) -> dict[str, Any]:
    """All run statistics as one JSON-able dict. Weighted by each row's `weight` where a population estimate is
    meant (agreement, accuracy); kappa and McNemar are paired statistics over the sampled rows. Rows without a
    human label (`toxicity` None) count for agreement between the sides, not for accuracy or McNemar."""
    n = len(rows)
    scored = [r for r in rows if r["binary_match"] is not None]
    weights = [float(r.get("weight") or 1.0) for r in scored]
    binary = metrics.weighted_proportion([bool(r["binary_match"]) for r in scored], weights)
    fine = metrics.weighted_proportion([bool(r["fine_match"]) for r in scored], weights)
    both = [r for r in scored if r["a_binary"] is not None and r["b_binary"] is not None]
    both_parsed = metrics.weighted_proportion([r["a_binary"] == r["b_binary"] for r in both],
                                              [float(r.get("weight") or 1.0) for r in both])
    kappa = metrics.kappa_with_bootstrap([r["a_binary"] for r in both], [r["b_binary"] for r in both],
                                         resamples=kappa_resamples)
    labelled = [r for r in scored if _labelled(r)]
    truth = [int(r["toxicity"]) for r in labelled]
    correct = {p: [r[f"{p}_binary"] is not None and r[f"{p}_binary"] == t for r, t in zip(labelled, truth)] for p in SIDES}
    mcnemar = metrics.mcnemar_exact(correct["a"], correct["b"])
    per_backend = {p: side_stats(rows, f"{p}_", label, kappa_resamples) for p, label in zip(SIDES, labels)}
    causes = [r["cause"] for r in rows]
    examples = {c: [_example(r) for r in rows if r["cause"] == c][:top_examples] for c in CAUSES}
    margins = [r for r in rows if r.get("margin_kind")]
    content_sims = [r["content_similarity"] for r in scored if r["content_similarity"] is not None]
    reasoning_sims = [r["reasoning_similarity"] for r in scored if r["reasoning_similarity"] is not None]
    value = binary.value
    both_labelled = sum(bool(r["a_parse_ok"]) and bool(r["b_parse_ok"]) for r in scored)
    decision = decide(None if math.isnan(value) else value, threshold,
                      [SideLabels(label, sum(bool(r[f"{p}_parse_ok"]) for r in scored), len(scored))
                       for p, label in zip(SIDES, labels)], both_labelled, status, min_labelled,
                      n_errors=n - len(scored), n_labelled=len(labelled))
    content_same = [bool(r["content_identical"]) for r in scored if r.get("content_identical") is not None]
    raw_same = [bool(r["raw_identical"]) for r in scored if r.get("raw_identical") is not None]
    notes = [NO_BOTH_LABELLED] if scored and not both_labelled else []
    notes += [NO_LABELLED_ROWS] if scored and not labelled else []
    return {
        "n": n, "n_scored": len(scored), "n_both_parsed": len(both), "n_labelled": len(labelled),
        "label_notes": notes,  # the headline's caveats: what the agreement does not say (no labels)
        "binary_agreement": _prop(binary), "fine_grain_agreement": _prop(fine),
        "binary_agreement_both_parsed": _prop(both_parsed),
        "cohen_kappa": {"value": _num(kappa.value), "low": _num(kappa.low), "high": _num(kappa.high), "n": len(both),
                        "reason": getattr(kappa, "reason", None),
                        "undefined_resamples": getattr(kappa, "undefined_resamples", 0)},
        "mcnemar": {"only_a_correct": mcnemar.only_a_correct, "only_b_correct": mcnemar.only_b_correct,
                    "p_value": _num(mcnemar.p_value) if labelled else None,
                    "n": len(labelled), "reason": None if labelled else metrics.NO_LABELLED_ROWS},
        "content_identical": _prop(metrics.wilson(sum(content_same), len(content_same))),
        "raw_identical": _prop(metrics.wilson(sum(raw_same), len(raw_same))),
        "n_both_labelled": both_labelled,
        "content_similarity_mean": _num(sum(content_sims) / len(content_sims)) if content_sims else None,
        "reasoning_similarity_mean": _num(sum(reasoning_sims) / len(reasoning_sims)) if reasoning_sims else None,
        "backends": per_backend,
        "causes": cause_counts(causes), "cause_examples": examples,
        "margins": {"scored": len(margins), "near_tie": sum(r["margin_kind"] == "near_tie" for r in margins),
                    "true_disagreement": sum(r["margin_kind"] == "true_disagreement" for r in margins)},
        "divergence": summarize_divergence(rows),
        "threshold": threshold, "min_labelled": min_labelled,
        "verdict": decision.verdict, "verdict_reason": decision.reason, "passed": decision.passed,
    }


EVALUATION = "evaluation"  # summary["kind"] of one arm scored against the human labels


def evaluate(rows: Sequence[dict[str, Any]], label: str, threshold: float = 0.95, status: str = "complete",
             min_labelled: float = DEFAULT_MIN_LABELLED, resamples: int = 2000) -> dict[str, Any]:
    """One arm against the human labels (`--backends api`): its tidy rows (one per example, repeat 0; the fields
    `tidy_row` writes) → accuracy, precision, recall and parse/refusal rates with Wilson CIs, F1 with a percentile
    bootstrap CI, the confusion matrix, and the verdict (`decide_evaluation`: accuracy against the threshold)."""
    stats = side_stats(rows, "", label, resamples)
    labelled = [r for r in rows if not r["error"] and _labelled(r)]
    accuracy = stats["accuracy"]["value"]
    decision = decide_evaluation(accuracy, threshold, SideLabels(label, stats["parsed"], stats["n"]), len(labelled),
                                 status, min_labelled, n_errors=stats["errors"])
    return {
        "kind": EVALUATION, "arm": label, "reference": "human labels",
        "n": len(rows), "n_scored": stats["n"], "n_labelled": len(labelled),
        "label_notes": [f"no labelled rows: nothing to evaluate {label} against"] if stats["n"] and not labelled else [],
        "backends": {"a": stats},
        "threshold": threshold, "min_labelled": min_labelled,
        "verdict": decision.verdict, "verdict_reason": decision.reason, "passed": decision.passed,
    }


def _failure_counts(codes: Iterable[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code in codes:
        if code:
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items()))


def _example(row: dict[str, Any]) -> dict[str, Any]:
    def brief(p: str) -> str:
        if row.get(f"{p}_error"):
            return f"error: {str(row[f'{p}_error'])[:80]}"
        content = (row.get(f"{p}_content") or "").strip().replace("\n", " ")
        return f"{row[f'{p}_outcome']} ({content[:60]!r})"

    out = {"example_id": row["example_id"], "truth": row["toxicity"], "text": (row.get("text") or "")[:80],
           "a": brief("a"), "b": brief("b")}
    if row.get("reasoning_similarity") is not None and (row.get("a_reasoning") or row.get("b_reasoning")):
        out["reasoning"] = (f"reasoning similarity {row['reasoning_similarity']:.2f}; "
                            f"{len(row.get('a_reasoning') or '')} vs {len(row.get('b_reasoning') or '')} chars")
    if row.get("margin_kind"):
        out["margin"] = f"{row['margin_kind']} ({row['margin_nats']:+.2f} nats)"
    return out
