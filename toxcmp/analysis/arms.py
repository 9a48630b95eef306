"""Arms: any number of (backend, model, policy, generation) configurations compared against a reference.

Data, one direction: each arm answers each example `repeats` times → **tidy rows**, one per (example, arm, repeat),
the source of truth written to `results.parquet` → **pair rows**, one per (example, arm) against the reference
(repeat 0), in the two-sided `a_*`/`b_*` shape every statistic and view already reads, written to `pairs.parquet`
→ per-arm statistics, the noise floor (each arm against its own repeats), the equivalence verdicts and the
all-arms statistics. Two arms give exactly the two-sided numbers: the first comparison *is* the old run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from toxcmp.analysis import metrics
from toxcmp.analysis.conformance import conformance
from toxcmp.analysis.matrices import fine_matrix
from toxcmp.analysis.prompt_tokens import parity_by_arm
from toxcmp.domain.parsing import recorded_source
from toxcmp.domain.policies import Policy
from toxcmp.domain.responses import ModelResponse
from toxcmp.analysis.scoring import (RESPONSE_FIELDS, SIDES, _num, _prop, derive, evaluate, response_fields, summarize,
                                     verdict_fields)

ARM_KEYS = ("model", "policy", "reasoning_effort", "max_new_tokens")  # options an arm may override
EXAMPLE_FIELDS = ("example_id", "text", "toxicity", "jailbreaking", "human_annotation", "weight")
DEFAULT_MARGIN = 0.02
ALPHA = 0.05
VERDICT_ORDER = ("incomplete", "fail", "inconclusive", "pass")  # a multi-arm run is its weakest arm; a fail shows


def tidy_row(example: dict[str, Any], arm: str, repeat: int, response: ModelResponse, policy: Policy,
             harmony: bool | None, unparsed_as: str = "none") -> dict[str, Any]:
    row: dict[str, Any] = {k: example.get(k) for k in EXAMPLE_FIELDS}
    row["toxicity"] = None if example.get("toxicity") is None else int(example["toxicity"])  # None: no human label
    row["weight"] = float(example.get("weight") or 1.0)
    row["arm"], row["repeat"] = arm, repeat
    row |= response_fields(response)
    row["reasoning_source"] = row.get("reasoning_source") or infer_reasoning_source(row, harmony)
    row |= verdict_fields(row, policy, harmony, unparsed_as)
    return row


def infer_reasoning_source(row: dict[str, Any], harmony: bool | None = None) -> str:
    """Where an answer's reasoning came from, as far as the recorded text tells (a response that did not say)."""
    return recorded_source(row.get("raw"), row.get("reasoning"), harmony)


def pair_row(reference: dict[str, Any], other: dict[str, Any], sides: Sequence[tuple[Policy, bool | None]],
             unparsed_as: str = "none") -> dict[str, Any]:
    """One example, the reference as side `a` and the arm as side `b`, with every pairwise fact derived."""
    row: dict[str, Any] = {k: reference.get(k) for k in EXAMPLE_FIELDS}
    for p, src in zip(SIDES, (reference, other)):
        row.update({f"{p}_{k}": src.get(k) for k in RESPONSE_FIELDS})
        row[f"{p}_backend"] = src["arm"]
    row["reference"], row["arm"] = reference["arm"], other["arm"]
    row["repeat"] = other.get("repeat", 0) if reference["arm"] == other["arm"] else 0
    return derive(row, sides[0][0], sides[0][1], unparsed_as, sides)


@dataclass
class Assembled:
    """Tidy rows regrouped: comparisons (arm vs reference, repeat 0) and each arm against its own repeats."""

    labels: list[str]
    reference: str
    comparisons: dict[str, list[dict[str, Any]]]
    repeats: dict[str, list[dict[str, Any]]]  # pair rows (arm repeat 0 vs repeat r > 0) per arm
    first: dict[str, list[dict[str, Any]]]  # repeat-0 tidy rows per arm, example order


def assemble(tidy: Sequence[dict[str, Any]], labels: Sequence[str], reference: str,
             sides: dict[str, tuple[Policy, bool | None]], unparsed_as: str = "none") -> Assembled:
    by_example: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for row in tidy:
        by_example.setdefault(row["example_id"], {})[(row["arm"], int(row.get("repeat") or 0))] = row
    complete = [slots for slots in by_example.values() if all((label, 0) in slots for label in labels)]
    others = [label for label in labels if label != reference]
    comparisons = {label: [pair_row(s[(reference, 0)], s[(label, 0)], (sides[reference], sides[label]), unparsed_as)
                           for s in complete] for label in others}
    repeats: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for s in complete:
        for (label, r), row in sorted(s.items(), key=lambda kv: kv[0][1]):
            if r > 0:
                repeats[label].append(pair_row(s[(label, 0)], row, (sides[label], sides[label]), unparsed_as))
    first = {label: [s[(label, 0)] for s in complete] for label in labels}
    return Assembled(list(labels), reference, comparisons, repeats, first)


# -- statistics over arms -----------------------------------------------------------------------------------------

def _mismatch(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """example id → share of its pair rows whose outcomes differ (errors left out)."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        if r.get("binary_match") is not None:
            sums.setdefault(r["example_id"], []).append(0.0 if r["binary_match"] else 1.0)
    return {k: sum(v) / len(v) for k, v in sums.items()}


def noise_floor(repeat_rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """An arm's agreement with itself across repeats: the best any backend can do against it."""
    scored = [r for r in repeat_rows if r.get("binary_match") is not None]
    if not scored:
        return None
    return _prop(metrics.wilson(sum(bool(r["binary_match"]) for r in scored), len(scored)))


def equivalence(comparison: Sequence[dict[str, Any]], reference_repeats: Sequence[dict[str, Any]],
                margin: float) -> dict[str, Any]:
    """TOST of (arm's disagreement with the reference) − (the reference's disagreement with itself)."""
    x = _mismatch(comparison)
    floor = _mismatch(reference_repeats)
    ids = [i for i in x if not reference_repeats or i in floor]
    test = metrics.equivalence_test([x[i] for i in ids], [floor.get(i, 0.0) for i in ids], margin)
    d = test.difference
    return {"n": d.n, "disagreement": _num(sum(x[i] for i in ids) / len(ids)) if ids else None,
            "floor_disagreement": _num(sum(floor.get(i, 0.0) for i in ids) / len(ids)) if ids else None,
            "floor_measured": bool(reference_repeats),
            "difference": _num(d.value), "ci90": [_num(d.low), _num(d.high)], "margin": margin,
            "p_equivalent": _num(test.p_equivalent), "p_different": _num(test.p_different)}


def accuracy_difference(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Paired difference in accuracy (arm − reference) on the rows both answered that have a human label, 95 %
    Wald interval; blank, with the reason, when no such row exists (a row without a label is no one's mistake)."""
    scored = [r for r in rows if r.get("binary_match") is not None and r.get("toxicity") is not None]
    correct = {p: [float(r[f"{p}_binary"] is not None and r[f"{p}_binary"] == int(r["toxicity"])) for r in scored]
               for p in SIDES}
    d = metrics.paired_difference(correct["b"], correct["a"])
    return {"value": _num(d.value), "low": _num(d.low), "high": _num(d.high), "n": d.n,
            "weighting": "unweighted: paired over the sampled rows",
            "reason": None if scored else metrics.NO_LABELLED_ROWS}


def pairwise_agreement(first: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Outcome agreement of every pair of arms (repeat 0), Wilson 95 % CIs; the diagonal is 1 by definition."""
    labels = list(first)
    cells = []
    for a in labels:
        line = []
        for b in labels:
            pairs = [(x["outcome"], y["outcome"]) for x, y in zip(first[a], first[b])
                     if x["outcome"] != "error" and y["outcome"] != "error"]
            line.append(_prop(metrics.wilson(sum(x == y for x, y in pairs), len(pairs))))
        cells.append(line)
    return {"labels": labels, "cells": cells}


def fleiss(first: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    ratings = [[row["binary"] if row.get("parse_ok") else None for row in rows] for rows in zip(*first.values())]
    if len(first) < 2:
        return {"value": None, "n": 0, "arms": len(first), "reason": "fewer than two arms"}
    estimate = metrics.fleiss_kappa(ratings)
    return {"value": _num(estimate.value), "n": sum(all(x is not None for x in r) for r in ratings),
            "arms": len(first), "reason": estimate.reason}


def response_shape(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How an arm's answers arrived: reasoning source, finish reasons, empty final answers, reasoning length."""
    answered = [r for r in rows if not r.get("error")]

    def counts(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in answered:
            value = str(r.get(key) or "none")
            out[value] = out.get(value, 0) + 1
        return dict(sorted(out.items()))

    lengths = [len(r.get("reasoning") or "") for r in answered]
    return {"answered": len(answered), "reasoning_source": counts("reasoning_source"),
            "finish_reason": counts("finish_reason"),
            "empty_final_answer": sum(not (r.get("content") or "").strip() for r in answered),
            "reasoning_chars_mean": _num(sum(lengths) / len(lengths)) if lengths else None}


def reasoning_effort_checks(arms: Sequence[dict[str, Any]], shapes: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The same arm at two reasoning efforts must think for different lengths; if not, the server ignores it."""
    checks = []
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            same = all(a.get(k) == b.get(k) for k in ("backend", "identity", "model", "policy"))
            if not same or a.get("reasoning_effort") == b.get("reasoning_effort"):
                continue
            la = shapes[a["label"]].get("reasoning_chars_mean")
            lb = shapes[b["label"]].get("reasoning_chars_mean")
            if la is None or lb is None:  # an arm without answers says nothing about its reasoning effort
                continue
            ignored = max(la, lb) == 0 or abs(la - lb) / max(la, lb) < 0.10
            checks.append({"arms": [a["label"], b["label"]],
                           "reasoning_effort": [a.get("reasoning_effort"), b.get("reasoning_effort")],
                           "reasoning_chars_mean": [la, lb], "flag": "reasoning_effort ignored" if ignored else None})
    return checks


def equivalence_verdict(label_verdict: str, p_equivalent: float | None, p_different: float | None) -> tuple[str, str]:
    if label_verdict in ("inconclusive", "incomplete"):
        return "inconclusive", f"the label comparison is {label_verdict}"
    if p_equivalent is not None and p_equivalent <= ALPHA:
        return "equivalent", f"disagreement minus the floor is within the margin (Holm p = {p_equivalent:.3g})"
    if p_different is not None and p_different <= ALPHA:
        return "different", f"disagreement exceeds the floor by more than the margin (Holm p = {p_different:.3g})"
    return "inconclusive", "neither within nor beyond the margin at this sample size (see toxcmp plan)"


def _holm_defined(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm over the p-values that exist; an undefined test stays undefined instead of counting as p = 1."""
    defined = [i for i, p in enumerate(p_values) if p is not None]
    adjusted = metrics.holm([p_values[i] for i in defined])
    out: list[float | None] = [None] * len(p_values)
    for i, p in zip(defined, adjusted):
        out[i] = p
    return out


def summarize_arms(assembled: Assembled, arms: Sequence[dict[str, Any]], threshold: float, min_labelled: float,
                   margin: float = DEFAULT_MARGIN, status: str = "complete", kappa_resamples: int = 2000,
                   repeats: int = 1) -> dict[str, Any]:
    """Every statistic of a run. The first comparison's summary is the top level (for two arms: the two-sided
    summary, unchanged), the headline comparison the written summary names in `headline`; `comparisons`,
    `noise_floor`, `pairwise_agreement`, `fleiss_kappa` cover every arm; `verdict` is the weakest arm's. One arm
    is no comparison: `evaluate_arm`, the arm against the human labels."""
    if len(assembled.labels) == 1:
        return evaluate_arm(assembled, arms, threshold, min_labelled, margin, status, kappa_resamples, repeats)
    ref = assembled.reference
    per: dict[str, dict[str, Any]] = {}
    for label, rows in assembled.comparisons.items():
        per[label] = summarize(rows, [ref, label], threshold, kappa_resamples=kappa_resamples, status=status,
                               min_labelled=min_labelled)
    labels = list(per)
    holm_mcnemar = metrics.holm([1.0 if per[k]["mcnemar"]["p_value"] is None else per[k]["mcnemar"]["p_value"]
                                 for k in labels])
    tests = {k: equivalence(assembled.comparisons[k], assembled.repeats.get(ref, []), margin) for k in labels}
    holm_eq = _holm_defined([tests[k]["p_equivalent"] for k in labels])
    holm_diff = _holm_defined([tests[k]["p_different"] for k in labels])
    comparisons = {}
    for i, k in enumerate(labels):
        s = per[k]
        verdict, why = equivalence_verdict(s["verdict"], holm_eq[i], holm_diff[i])
        comparisons[k] = {
            "verdict": s["verdict"], "verdict_reason": s["verdict_reason"],
            "binary_agreement": s["binary_agreement"], "binary_agreement_both_parsed": s["binary_agreement_both_parsed"],
            "cohen_kappa": s["cohen_kappa"], "content_identical": s["content_identical"],
            "mcnemar": dict(s["mcnemar"], p_holm=_num(holm_mcnemar[i])),
            "accuracy": {ref: s["backends"]["a"]["accuracy"], k: s["backends"]["b"]["accuracy"]},
            "accuracy_difference": accuracy_difference(assembled.comparisons[k]),
            "causes": s["causes"], "transitions": fine_matrix(assembled.comparisons[k]),
            "divergence": s["divergence"],
            "equivalence": dict(tests[k], p_equivalent_holm=_num(holm_eq[i]), p_different_holm=_num(holm_diff[i]),
                                verdict=verdict, why=why),
        }
    top = dict(per[labels[0]]) if labels else {}
    shapes = {label: response_shape(rows) for label, rows in assembled.first.items()}
    top.update({
        "reference": ref, "arms": list(arms), "repeats": repeats, "margin": margin, "comparisons": comparisons,
        "noise_floor": {label: noise_floor(assembled.repeats.get(label, [])) for label in assembled.labels},
        "pairwise_agreement": pairwise_agreement(assembled.first), "fleiss_kappa": fleiss(assembled.first),
        "response_shape": shapes, "reasoning_effort_checks": reasoning_effort_checks(arms, shapes),
        # each arm's reported prompt tokens against toxcmp's own render (toxcmp.analysis.prompt_tokens)
        "prompt_tokens": parity_by_arm(assembled.first),
    })
    # every arm's fidelity facts in one ranked table: the first line is the arm to trust (analysis.conformance)
    top["conformance"] = conformance(arms, ref, assembled.first, comparisons, top["noise_floor"], shapes,
                                     top["reasoning_effort_checks"], top["prompt_tokens"])
    if len(labels) > 1:
        worst = min((c["verdict"] for c in comparisons.values()), key=VERDICT_ORDER.index)
        top["verdict"] = worst
        top["passed"] = worst == "pass"
        top["verdict_reason"] = "; ".join(f"{k}: {c['verdict']}" for k, c in comparisons.items()) + (
            f" (each arm against {ref}; the run is its weakest arm)")
    return top



def evaluate_arm(assembled: Assembled, arms: Sequence[dict[str, Any]], threshold: float, min_labelled: float,
                 margin: float = DEFAULT_MARGIN, status: str = "complete", resamples: int = 2000,
                 repeats: int = 1) -> dict[str, Any]:
    """One arm (`--backends api`): `scoring.evaluate` of its first answers against the human labels (accuracy,
    precision, recall, F1, parse and refusal rates, the verdict), with what a run of arms says about each arm: its
    noise floor (with `--repeats 2`), response shape, prompt-token parity and conformance line. No comparisons."""
    label = assembled.labels[0]
    first = assembled.first[label]
    out = evaluate(first, label, threshold, status, min_labelled, resamples=resamples)
    shapes = {label: response_shape(first)}
    floors = {label: noise_floor(assembled.repeats.get(label, []))}
    checks = reasoning_effort_checks(arms, shapes)
    parity = parity_by_arm(assembled.first)
    out.update({"arms": list(arms), "repeats": repeats, "margin": margin, "comparisons": {}, "noise_floor": floors,
                "response_shape": shapes, "reasoning_effort_checks": checks, "prompt_tokens": parity})
    out["conformance"] = conformance(arms, label, assembled.first, {}, floors, shapes, checks, parity)
    return out
