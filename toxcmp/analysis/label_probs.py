"""Label probabilities (issue 24, step 3): how likely each side was to write each policy label where it writes its
label, and what that says against the human labels (AUROC, Brier score, ECE) and between arms (paired Δ).

Where a label is written (`label_offset`), in the text a side's tokens spell: after Harmony's final-channel header
when the text holds one (gpt-oss, its channels leaked into the text or generated in process; a server that parsed
the channels sends the final message alone, and it starts there), after a closing `</think>` for a reasoning model
that writes one, then at the answer's first character for a policy whose answer is the label itself, or at the
value of the label key (`"violation": 1`) for a JSON policy. The token covering that character is read: its top-K
alternatives that spell the same characters before it, then a label, give that label's probability (several
alternatives for one label add up). p(violating) is the mass of the labels that mean 1 over the mass of all the
policy's labels at that position, so it is defined even when the model would rather write something else. Pure: no
model here."""

from __future__ import annotations

import math
import random
import re
from typing import Any, Sequence

from toxcmp.domain.parsing import BINARY_KEYS, HARMONY_FINAL
from toxcmp.domain.policies import BINARY_CATEGORIES

ECE_BINS = 10
BOOTSTRAP = 2000
_HARMONY_MARK = "<|channel|>"
_THINK_CLOSE = "</think>"
_JSON_LABEL = re.compile(r'"(?:%s)"\s*:\s*"?' % "|".join(re.escape(k) for k in BINARY_KEYS), re.IGNORECASE)


def label_offset(text: str, policy: Any, harmony: bool | None) -> int | None:
    """The character of `text` where the side writes its label; None when it writes none there (a Harmony text
    without a final message, a JSON answer without a label key)."""
    start = 0
    if harmony and (at := text.rfind(HARMONY_FINAL)) >= 0:
        start = at + len(HARMONY_FINAL)
    elif harmony and _HARMONY_MARK in text:
        return None
    elif not harmony and (at := text.rfind(_THINK_CLOSE)) >= 0:
        start = at + len(_THINK_CLOSE)
    if getattr(policy, "output", "label") == "json":
        found = _JSON_LABEL.search(text, start)
        return found.end() if found else None
    body = text[start:]
    return start + len(body) - len(body.lstrip())


def label_set(policy: Any) -> tuple[tuple[str, int], ...]:
    """The labels scored at the position: a JSON policy's label key holds 0 or 1, a label policy writes its own."""
    return BINARY_CATEGORIES if getattr(policy, "output", "label") == "json" else tuple(policy.categories)


def token_at(tokens: Sequence[str], offset: int) -> tuple[int, str] | None:
    """The index of the token covering character `offset` of the tokens' concatenation, and the characters of
    that token before the offset (what every alternative must spell first)."""
    at = 0
    for j, token in enumerate(tokens):
        if at <= offset < at + len(token):
            return j, token[: offset - at]
        at += len(token)
    return None


def p_violating_from_top(top: Sequence[Sequence[Any]], categories: Sequence[tuple[str, int]],
                         before: str = "") -> float | None:
    """p(violating) at a position from the top-K alternatives sent with its token ([token, log p], …): each
    alternative that spells `before` and then a label (optionally after white space, ending there or before a
    non-word character) counts for that label. Defined when every label of the policy is among them (a label
    outside the top K has an unknown probability)."""
    found: dict[str, float] = {}
    for token, logprob in top:
        name = label_spelled((token or ""), before, categories)
        if name is not None:
            found[name] = found.get(name, 0.0) + math.exp(float(logprob))
    if len(found) < len(categories):
        return None
    return violating_share(found, categories)


def label_spelled(token: str, before: str, categories: Sequence[tuple[str, int]]) -> str | None:
    if not token.startswith(before):
        return None
    rest = token[len(before):].lstrip()
    for name, _ in sorted(categories, key=lambda c: -len(c[0])):  # the longest label a token spells
        after = rest[len(name):len(name) + 1]
        if rest.startswith(name) and not (after.isalnum() or after == "_"):
            return name
    return None


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
