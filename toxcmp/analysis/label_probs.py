"""Label probabilities (issue 24, step 3): how likely each side was to write each policy label where it writes its
label, and what that says against the human labels (AUROC, Brier score, ECE) and between arms (paired Δ).

Where a label is written: the answer's first token, for a policy whose answer is the label itself (`output =
"label"`) and a model without Harmony channels. JSON policies and gpt-oss's Harmony final channel are not modelled
here yet: their arms get no label probability, said in the summary. p(violating) is the probability mass of the
labels that mean 1, over the mass of all the policy's labels at that position (so it is defined even when the model
would rather write something else)."""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

ECE_BINS = 10
BOOTSTRAP = 2000


def label_position_known(policy: Any, harmony: bool | None) -> str | None:
    """None when the label's position is modelled for this policy and model, else why not."""
    if getattr(policy, "output", "label") != "label":
        return "the policy answers in JSON: the label's position inside it is not modelled yet"
    if harmony:
        return "gpt-oss writes its label in Harmony's final channel: that position is not modelled yet"
    return None


def p_violating_from_top(top: Sequence[Sequence[Any]], categories: Sequence[tuple[str, int]]) -> float | None:
    """p(violating) at a position from the top-K alternatives sent with its token ([token, log p], …): defined
    when every label of the policy is among them (a label outside the top K has an unknown probability)."""
    found = {}
    for token, logprob in top:
        name = (token or "").strip()
        if name in dict(categories) and name not in found:
            found[name] = math.exp(float(logprob))
    if len(found) < len(categories):
        return None
    return violating_share(found, categories)


def violating_share(probs: dict[str, float], categories: Sequence[tuple[str, int]]) -> float | None:
    total = sum(probs.get(name, 0.0) for name, _ in categories)
    if total <= 0:
        return None
    return sum(probs.get(name, 0.0) for name, value in categories if value == 1) / total


def auroc(scores: Sequence[float], truth: Sequence[int]) -> float | None:
    """Area under the ROC curve: the chance a random positive scores above a random negative, ties counting half
    (the Mann–Whitney U over n₁n₀). None without both classes."""
    pos = [s for s, y in zip(scores, truth) if y == 1]
    neg = [s for s, y in zip(scores, truth) if y == 0]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brier(scores: Sequence[float], truth: Sequence[int]) -> float | None:
    return sum((s - y) ** 2 for s, y in zip(scores, truth)) / len(scores) if scores else None


def reliability_bins(scores: Sequence[float], truth: Sequence[int], bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Equal-width bins of p(violating): rows, mean predicted, share truly violating (the reliability diagram)."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [(s, y) for s, y in zip(scores, truth) if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if members:
            out.append({"low": lo, "high": hi, "n": len(members),
                        "mean_p": sum(s for s, _ in members) / len(members),
                        "share_violating": sum(y for _, y in members) / len(members)})
    return out


def ece(scores: Sequence[float], truth: Sequence[int], bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: the row-weighted mean |mean predicted − share violating| over the bins."""
    if not scores:
        return None
    return sum(b["n"] * abs(b["mean_p"] - b["share_violating"]) for b in reliability_bins(scores, truth, bins)) / len(scores)


def arm_calibration(p: dict[str, float], truth: dict[str, int | None]) -> dict[str, Any]:
    """One arm's p(violating) by example against the human labels (rows without a label are left out)."""
    ids = [i for i in p if truth.get(i) is not None]
    scores, labels = [p[i] for i in ids], [int(truth[i]) for i in ids]
    return {"rows": len(p), "labelled": len(ids), "auroc": auroc(scores, labels), "brier": brier(scores, labels),
            "ece": ece(scores, labels), "bins": reliability_bins(scores, labels)}


def paired_delta(arm: dict[str, float], reference: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Δ p(violating) = arm − reference over the rows both have: mean with a percentile bootstrap 95 % CI, mean and
    largest |Δ| (and where)."""
    ids = sorted(set(arm) & set(reference))
    deltas = [arm[i] - reference[i] for i in ids]
    if not deltas:
        return {"n": 0, "mean": None, "low": None, "high": None, "mean_abs": None, "max_abs": None, "worst": None}
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(deltas) for _ in deltas) / len(deltas) for _ in range(BOOTSTRAP))
    worst = max(range(len(ids)), key=lambda k: abs(deltas[k]))
    return {"n": len(deltas), "mean": sum(deltas) / len(deltas), "low": means[int(0.025 * BOOTSTRAP)],
            "high": means[int(0.975 * BOOTSTRAP) - 1], "mean_abs": sum(abs(d) for d in deltas) / len(deltas),
            "max_abs": abs(deltas[worst]), "worst": ids[worst]}


def label_prob_lines(summary: dict[str, Any]) -> list[str]:
    """The console's lines: each arm's calibration, then the headline's paired difference."""
    lp = summary.get("label_probs") or {}
    lines = []
    headline = (summary.get("headline") or {}).get("arm")
    d = (lp.get("paired") or {}).get(headline) or {}
    agreement = (summary.get("binary_agreement") or {}).get("value")
    if d.get("n") and agreement is not None:  # the parity headline: labels, then how far their probabilities are
        lines.append(f"labels agree {100 * agreement:.1f}%; p(violating) differs by {d['mean_abs']:.3f} on average "
                     f"(max {d['max_abs']:.3f}) over {d['n']} rows")
    for label, a in (lp.get("arms") or {}).items():
        if a.get("why_not"):
            lines.append(f"label probabilities, {label}: none ({a['why_not']})")
            continue
        auc = "—" if a["auroc"] is None else f"{a['auroc']:.3f}"
        brier_ = "—" if a["brier"] is None else f"{a['brier']:.3f}"
        ece_ = "—" if a["ece"] is None else f"{a['ece']:.3f}"
        lines.append(f"label probabilities, {label} ({a['source']}): on {a['rows']} rows, {a['labelled']} labelled; "
                     f"AUROC {auc}, Brier {brier_}, ECE {ece_}")
    for label, d in (lp.get("paired") or {}).items():
        if d["n"]:
            lines.append(f"p(violating), {label} − {lp.get('reference')}: mean {d['mean']:+.3f} "
                         f"[{d['low']:+.3f}, {d['high']:+.3f}], |Δ| mean {d['mean_abs']:.3f}, max {d['max_abs']:.3f} "
                         f"over {d['n']} rows")
    return lines
