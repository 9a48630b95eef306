"""Conformance: one line per arm on how faithfully it served the model, ranked so the first line answers "which
backend (provider) can I trust for this model and policy" — in the spirit of provider verifiers (MoonshotAI's
K2-Vendor-Verifier), but paired against a reference, with intervals, a noise floor and an equivalence test.

Each line gathers what the run already measured for that arm: where the reasoning came from, the finish-reason
mix, empty final answers and truncations (Wilson 95 % CIs), the parameters the server refused (sent once more
without them, `toxcmp.backends.api`), whether a reasoning effort was honoured, prompt-token parity against
toxcmp's own render, and, against the reference, label agreement with its CI, the arm's noise floor and the
equivalence verdict. The findings are the facts that argue against trusting it, in words.

Standing, best first: `faithful` (equivalent to the reference, no finding), `inconclusive` (no finding, but the
sample cannot show equivalence), `suspect` (a finding: it was not served as asked, or answers went missing),
`not faithful` (its labels differ from the reference's beyond the margin, or the label comparison failed).
Within a standing: the higher lower bound of agreement first, then fewer findings, then the label.
"""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.analysis import metrics
from toxcmp.analysis.scoring import _prop
from toxcmp.backends.engines import UNKNOWN_DEFAULTS

STANDINGS = ("faithful", "inconclusive", "suspect", "not faithful")
EFFORT_PARAMETER = "reasoning_effort"


def _count(rows: Sequence[dict[str, Any]], test: Any) -> dict[str, Any]:
    return _prop(metrics.wilson(sum(bool(test(r)) for r in rows), len(rows)))


def is_truncated(row: dict[str, Any]) -> bool:
    return row.get("parse_failure") == "truncated" or row.get("finish_reason") == "length"


def is_empty_final(row: dict[str, Any]) -> bool:
    """No final answer, and not because the token budget ran out (that is a truncation)."""
    return not (row.get("content") or "").strip() and not is_truncated(row)


def rejected_counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        for name in filter(None, (r.get("rejected_parameters") or "").split(",")):
            out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def effort_status(arm: dict[str, Any], checks: Sequence[dict[str, Any]], rejected: dict[str, int]) -> str | None:
    """`rejected` (the server refused the parameter), `ignored` / `honoured` (against an arm of the same
    configuration at another effort), `not tested` (no such arm); None when the arm asked for no effort."""
    if not arm.get("reasoning_effort"):
        return None
    if EFFORT_PARAMETER in rejected:
        return "rejected"
    mine = [c for c in checks if arm["label"] in c["arms"]]
    if not mine:
        return "not tested"
    return "ignored" if any(c.get("flag") for c in mine) else "honoured"


def _findings(line: dict[str, Any], parity: dict[str, Any] | None) -> list[str]:
    out = []
    n = line["rows"]
    if line["errors"]:
        out.append(f"{line['errors']}/{n} requests failed")
    for name, k in line["rejected_parameters"].items():
        what = "the reasoning effort asked for was not applied" if name == EFFORT_PARAMETER else "answered without it"
        out.append(f"the server refused {name} on {k}/{n} rows: {what}")
    if line["reasoning_effort"] == "ignored":
        out.append("reasoning effort ignored: reasoning as long at another effort")
    truncated, empty = line["truncated"], line["empty_final"]
    if truncated["successes"]:
        out.append(f"{truncated['successes']}/{truncated['n']} cut off by the token budget (raise --max-new-tokens)")
    if empty["successes"]:
        out.append(f"{empty['successes']}/{empty['n']} with no final answer")
    if len(line["reasoning_source"]) > 1:
        out.append("reasoning arrived in " + str(len(line["reasoning_source"])) + " shapes ("
                   + ", ".join(f"{k} {v}" for k, v in line["reasoning_source"].items()) + ")")
    equal = (parity or {}).get("equal")
    if equal and equal["successes"] < equal["n"]:
        text = f"prompt tokens differ from toxcmp's render on {equal['n'] - equal['successes']}/{equal['n']} rows"
        variants = (parity or {}).get("variants") or {}
        if variants.get("explained_by"):
            text += " (" + ", ".join(f"{(variants.get('titles') or {}).get(k, k)}: {v}"
                                     for k, v in variants["explained_by"].items()) + ")"
        out.append(text)
    return out


def _notes(arm: dict[str, Any]) -> list[str]:
    """What could explain a difference without being a finding against the arm (the standing ignores it)."""
    engine = (arm.get("identity") or {}).get("engine")
    return [f"the engine behind its URL is not known: {UNKNOWN_DEFAULTS}"] if engine == "unknown" else []


def _standing(line: dict[str, Any]) -> str:
    if line["equivalence"] == "different" or line["verdict"] == "fail":
        return "not faithful"
    if line["findings"]:
        return "suspect"
    return "faithful" if line["equivalence"] == "equivalent" else "inconclusive"


def conformance(arms: Sequence[dict[str, Any]], reference: str, first: dict[str, list[dict[str, Any]]],
                comparisons: dict[str, dict[str, Any]], floors: dict[str, Any], shapes: dict[str, dict[str, Any]],
                effort_checks: Sequence[dict[str, Any]], parity: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ranked conformance lines (`ranked`, arms against the reference) and the reference's own line."""
    by_label = {a["label"]: a for a in arms}
    lines = []
    for label, rows in first.items():
        answered = [r for r in rows if not r.get("error")]
        rejected = rejected_counts(rows)
        comparison = comparisons.get(label) or {}
        line: dict[str, Any] = {
            "arm": label, "rows": len(rows), "answered": len(answered), "errors": len(rows) - len(answered),
            "reasoning_source": (shapes.get(label) or {}).get("reasoning_source") or {},
            "finish_reason": (shapes.get(label) or {}).get("finish_reason") or {},
            "truncated": _count(answered, is_truncated), "empty_final": _count(answered, is_empty_final),
            "rejected_parameters": rejected,
            "reasoning_effort_asked": (by_label.get(label) or {}).get("reasoning_effort"),
            "reasoning_effort": effort_status(by_label.get(label) or {"label": label}, effort_checks, rejected),
            "prompt_tokens_equal": (parity.get(label) or {}).get("equal"),
            "prompt_tokens_reason": (parity.get(label) or {}).get("reason"),
            "agreement": comparison.get("binary_agreement"),
            "noise_floor": floors.get(label),
            "equivalence": (comparison.get("equivalence") or {}).get("verdict"),
            "verdict": comparison.get("verdict"),
        }
        line["findings"] = _findings(line, parity.get(label))
        line["notes"] = _notes(by_label.get(label) or {})
        line["standing"] = "reference" if label == reference else _standing(line)
        lines.append(line)
    ranked = sorted((x for x in lines if x["arm"] != reference), key=_rank_key)
    for i, line in enumerate(ranked, 1):
        line["rank"] = i
    ref = next((x for x in lines if x["arm"] == reference), None)
    return {"ranked": ranked, "reference": ref, "standings": list(STANDINGS),
            "order": "standing (faithful, inconclusive, suspect, not faithful), then the lower bound of agreement "
                     "with the reference, then fewer findings"}


def _rank_key(line: dict[str, Any]) -> tuple[int, float, int, str]:
    low = (line.get("agreement") or {}).get("low")
    return (STANDINGS.index(line["standing"]), -(low if low is not None else -1.0), len(line["findings"]), line["arm"])
