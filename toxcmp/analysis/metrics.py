"""Paired agreement and accuracy statistics. Pure functions over sequences; results are frozen dataclasses.

Labels are 0/1 or None (no verdict: parse failure, refusal, error). Cohen's kappa is over the pairs where both
sides gave a label (pairs with a missing side are left out). Accuracy (`classification_report`) counts a missing
verdict as wrong; a row without a human label (truth None) is left out of it. A statistic that is undefined for
the data (no pairs, kappa with chance agreement 1, accuracy without labelled rows or without a single label from
the classifier, precision without a positive prediction) is NaN with its reason, never a number that looks like a
result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    successes: int
    n: int
    value: float
    low: float
    high: float


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion p over n trials; n may be fractional (Kish's effective n)."""
    if not n > 0 or math.isnan(p):
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p * (1 - p)) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson(successes: int, n: int, z: float = Z95) -> Proportion:
    """Wilson score interval; well-behaved at 0 and n, unlike the normal approximation."""
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"), float("nan"))
    p = successes / n
    return Proportion(successes, n, p, *wilson_interval(p, n, z))


def _pairs(a: Sequence[object], b: Sequence[object]) -> list[tuple[object, object]]:
    if len(a) != len(b):
        raise ValueError(f"paired sequences differ in length: {len(a)} vs {len(b)}")
    return [(x, y) for x, y in zip(a, b) if x is not None and y is not None]


NO_PAIRS = "no pairs where both sides gave a label"
CONSTANT = "undefined: both sides gave one constant label (chance agreement is 1)"


def cohen_kappa(a: Sequence[object], b: Sequence[object]) -> float:
    """Cohen's kappa over the pairs where both sides have a label; NaN when undefined (see `kappa_undefined`)."""
    pairs = _pairs(a, b)
    n = len(pairs)
    if n == 0:
        return float("nan")
    labels = sorted({x for x, _ in pairs} | {y for _, y in pairs}, key=str)
    po = sum(x == y for x, y in pairs) / n
    pe = sum((sum(x == k for x, _ in pairs) / n) * (sum(y == k for _, y in pairs) / n) for k in labels)
    if pe >= 1.0:  # both sides constant on the same label: kappa is 0/0, not perfect agreement
        return float("nan")
    return (po - pe) / (1 - pe)


def kappa_undefined(a: Sequence[object], b: Sequence[object]) -> str | None:
    """Why `cohen_kappa(a, b)` has no value, or None when it has one."""
    pairs = _pairs(a, b)
    if not pairs:
        return NO_PAIRS
    return CONSTANT if len({x for x, _ in pairs} | {y for _, y in pairs}) == 1 else None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a 95 % CI. `reason` says why value (or the CI) is NaN; resamples where the statistic
    was undefined are left out of the CI and counted in `undefined_resamples`."""

    value: float
    low: float
    high: float
    undefined_resamples: int = 0
    reason: str | None = None


def kappa_with_bootstrap(a: Sequence[object], b: Sequence[object], resamples: int = 2000,
                         seed: int = 0) -> Estimate:
    """Cohen's kappa with a percentile bootstrap 95 % CI over example pairs (vectorised: 2,000 × 2,000 in ~0.1 s).

    Resample r draws n pair indices with `numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))`
    (drawn in chunks of 500 rows, which yields the same stream); the CI is the 2.5 and 97.5 percentiles
    (`numpy.quantile`, linear) of kappa over the resamples where it is defined.
    """
    import numpy as np

    pairs = _pairs(a, b)
    n = len(pairs)
    reason = kappa_undefined(a, b)
    value = float("nan") if reason else cohen_kappa([x for x, _ in pairs], [y for _, y in pairs])
    if reason:
        return Estimate(value, float("nan"), float("nan"), resamples if n else 0, reason)
    if n < 2:
        return Estimate(value, float("nan"), float("nan"), 0, "no CI from a single pair")
    labels = sorted({x for x, _ in pairs} | {y for _, y in pairs}, key=str)
    code = {k: i for i, k in enumerate(labels)}
    xa = np.array([code[x] for x, _ in pairs])
    xb = np.array([code[y] for _, y in pairs])
    rng = np.random.default_rng(seed)
    stats = []
    for chunk in range(0, resamples, 500):  # bounded memory for large n
        idx = rng.integers(0, n, size=(min(500, resamples - chunk), n))
        sa, sb = xa[idx], xb[idx]
        po = (sa == sb).mean(axis=1)
        pe = sum((sa == k).mean(axis=1) * (sb == k).mean(axis=1) for k in range(len(labels)))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(pe < 1.0, (po - pe) / (1 - pe), np.nan))
    flat = np.concatenate(stats)
    defined = flat[~np.isnan(flat)]
    undefined = int(flat.size - defined.size)
    if defined.size == 0:
        return Estimate(value, float("nan"), float("nan"), undefined, f"no CI: every resample was {CONSTANT}")
    low, high = np.quantile(defined, [0.025, 0.975])
    return Estimate(value, float(low), float(high), undefined)


@dataclass(frozen=True)
class McNemar:
    only_a_correct: int
    only_b_correct: int
    p_value: float


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> McNemar:
    """Exact (binomial) McNemar test on discordant pairs of per-example correctness."""
    if len(a_correct) != len(b_correct):
        raise ValueError("paired sequences differ in length")
    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    n = b + c
    if n == 0:
        return McNemar(b, c, 1.0)
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return McNemar(b, c, min(1.0, 2 * tail))


@dataclass(frozen=True)
class Confusion:
    tp: float
    fp: float
    fn: float
    tn: float
    missing: int  # examples without a prediction (excluded)


def confusion(truth: Sequence[int], predicted: Sequence[int | None],
              weights: Sequence[float] | None = None) -> Confusion:
    weights = weights or [1.0] * len(truth)
    tp = fp = fn = tn = 0.0
    missing = 0
    for t, p, w in zip(truth, predicted, weights):
        if p is None:
            missing += 1
        elif t == 1 and p == 1:
            tp += w
        elif t == 0 and p == 1:
            fp += w
        elif t == 1 and p == 0:
            fn += w
        else:
            tn += w
    return Confusion(tp, fp, fn, tn, missing)


# why an accuracy statistic has no value (Accuracy.reasons)
NO_LABELLED_ROWS = "no labelled rows"
NO_PREDICTIONS = "no labels from this side"
NO_PREDICTED_POSITIVES = "no positive predictions (precision is 0/0)"
NO_POSITIVES = "no positive rows among the labelled ones (recall is 0/0)"
NO_F1 = "no positive rows and no positive predictions (F1 is 0/0)"
ACCURACY_STATISTICS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class Accuracy:
    accuracy: Proportion
    precision: Proportion
    recall: Proportion
    f1: float
    confusion: Confusion
    unlabelled: int = 0  # rows without a human label (truth None): left out of every statistic here
    reasons: dict[str, str] = field(default_factory=dict)  # statistic (ACCURACY_STATISTICS) → why it is NaN


def weighted_proportion(hits: Sequence[bool], weights: Sequence[float] | None = None) -> Proportion:
    """A (weighted) proportion with a Wilson CI on Kish's effective n (continuous: p and n_eff are not rounded);
    plain Wilson when weights are equal."""
    n = len(hits)
    if weights is None or len(set(weights)) <= 1:
        return wilson(sum(bool(h) for h in hits), n)
    total = sum(weights)
    if n == 0 or total <= 0:
        return wilson(0, 0)
    p = sum(w for h, w in zip(hits, weights) if h) / total
    n_eff = total * total / sum(w * w for w in weights)
    return Proportion(sum(bool(h) for h in hits), n, p, *wilson_interval(p, n_eff))


def classification_report(truth: Sequence[int | None], predicted: Sequence[int | None],
                          weights: Sequence[float] | None = None) -> Accuracy:
    """Per-backend accuracy against ground truth; a missing verdict (refusal, unparsed) counts as wrong.

    Accuracy and recall keep missing verdicts in their denominators (a classifier that does not answer did not
    catch the example); precision is over predicted positives only; F1 = 2·TP / (2·TP + FP + FN), FN counting the
    positives without a label too (= 2PR / (P + R), and 0 when there are positives and no true positive). Rows
    whose truth is None (no human label) are left out. Undefined, NaN with `reasons[name]`: everything without a
    labelled row (NO_LABELLED_ROWS) or without a single label from the classifier (NO_PREDICTIONS: "0 %" would
    only say that it never answered); precision without a positive prediction; recall without a positive row; F1
    when neither exists. Weighted when `weights` are given.
    """
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    w_all = list(weights) if weights is not None else [1.0] * len(truth)
    keep = [i for i, t in enumerate(truth) if t is not None]
    t_ = [int(truth[i]) for i in keep]
    p_ = [predicted[i] for i in keep]
    w = [w_all[i] for i in keep]
    cm = confusion(t_, p_, w)
    unlabelled = len(truth) - len(keep)
    none = wilson(0, 0)
    if not keep or all(p is None for p in p_):
        reason = NO_LABELLED_ROWS if not keep else NO_PREDICTIONS
        return Accuracy(none, none, none, float("nan"), cm, unlabelled, {k: reason for k in ACCURACY_STATISTICS})
    reasons: dict[str, str] = {}
    accuracy = weighted_proportion([p is not None and p == t for t, p in zip(t_, p_)], w)
    pos = [i for i, p in enumerate(p_) if p == 1]
    precision = weighted_proportion([t_[i] == 1 for i in pos], [w[i] for i in pos])
    if not pos:
        reasons["precision"] = NO_PREDICTED_POSITIVES
    actual = [i for i, t in enumerate(t_) if t == 1]
    recall = weighted_proportion([p_[i] == 1 for i in actual], [w[i] for i in actual])
    if not actual:
        reasons["recall"] = NO_POSITIVES
    f1 = _f1(cm.tp, cm.fp, sum(w[i] for i in actual) - cm.tp)
    if math.isnan(f1):
        reasons["f1"] = NO_F1
    return Accuracy(accuracy, precision, recall, f1, cm, unlabelled, reasons)


def _f1(tp: float, fp: float, fn: float) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator > 0 else float("nan")


def f1_with_bootstrap(truth: Sequence[int | None], predicted: Sequence[int | None],
                      weights: Sequence[float] | None = None, resamples: int = 2000, seed: int = 0) -> Estimate:
    """F1 (as `classification_report` defines it) with a percentile bootstrap 95 % CI over the labelled rows.

    Resample r draws n row indices with `numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))` (in
    chunks of 500 rows, the same stream), n = rows with a human label; each resample's F1 is
    2·TP / (2·TP + FP + FN) with the rows' weights; the CI is the 2.5 and 97.5 percentiles (`numpy.quantile`,
    linear) of the resamples where it is defined (the others are counted in `undefined_resamples`).
    """
    import numpy as np

    report = classification_report(truth, predicted, weights)
    if math.isnan(report.f1):
        return Estimate(float("nan"), float("nan"), float("nan"), 0, report.reasons.get("f1"))
    w_all = list(weights) if weights is not None else [1.0] * len(truth)
    keep = [i for i, t in enumerate(truth) if t is not None]
    n = len(keep)
    if n < 2 or resamples < 1:
        return Estimate(report.f1, float("nan"), float("nan"), 0, "no CI from a single row" if n < 2 else None)
    positive = np.array([int(truth[i]) == 1 for i in keep])
    said_positive = np.array([predicted[i] == 1 for i in keep])
    w = np.array([float(w_all[i]) for i in keep])
    # per row: its weight toward 2·TP + FP + FN (the denominator) and toward 2·TP (the numerator)
    numerator_w = 2 * w * (positive & said_positive)
    denominator_w = numerator_w + w * (positive ^ said_positive)
    rng = np.random.default_rng(seed)
    stats = []
    for chunk in range(0, resamples, 500):
        idx = rng.integers(0, n, size=(min(500, resamples - chunk), n))
        tp2 = numerator_w[idx].sum(axis=1)
        denominator = denominator_w[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats.append(np.where(denominator > 0, tp2 / denominator, np.nan))
    flat = np.concatenate(stats)
    defined = flat[~np.isnan(flat)]
    undefined = int(flat.size - defined.size)
    if defined.size == 0:
        return Estimate(report.f1, float("nan"), float("nan"), undefined, f"no CI: every resample had {NO_F1}")
    low, high = np.quantile(defined, [0.025, 0.975])
    return Estimate(report.f1, float(low), float(high), undefined)


# -- several arms -------------------------------------------------------------------------------------------------

def fleiss_kappa(ratings: Sequence[Sequence[object]]) -> Estimate:
    """Fleiss' κ for items each rated by the same number of raters (None ratings: the item is left out)."""
    items = [list(r) for r in ratings if r and all(x is not None for x in r)]
    if not items:
        return Estimate(float("nan"), float("nan"), float("nan"), reason="no item rated by every arm")
    m = len(items[0])
    if m < 2 or any(len(r) != m for r in items):
        raise ValueError("every item needs the same number (≥ 2) of ratings")
    categories = sorted({x for r in items for x in r}, key=str)
    n = len(items)
    counts = [[sum(1 for x in r if x == c) for c in categories] for r in items]
    p_item = [(sum(c * c for c in row) - m) / (m * (m - 1)) for row in counts]
    p_bar = sum(p_item) / n
    p_cat = [sum(row[j] for row in counts) / (n * m) for j in range(len(categories))]
    p_e = sum(p * p for p in p_cat)
    if p_e >= 1.0:
        return Estimate(float("nan"), float("nan"), float("nan"), reason="undefined: every arm gave one constant label")
    return Estimate((p_bar - p_e) / (1 - p_e), float("nan"), float("nan"))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@dataclass(frozen=True)
class PairedDifference:
    """mean(x − y) over paired observations, with its standard error and a (1 − 2·alpha) Wald interval."""

    value: float
    se: float
    low: float
    high: float
    n: int


def paired_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> PairedDifference:
    if len(x) != len(y):
        raise ValueError("paired sequences differ in length")
    n = len(x)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    d = [float(a) - float(b) for a, b in zip(x, y)]
    mean = sum(d) / n
    var = sum((v - mean) ** 2 for v in d) / (n - 1) if n > 1 else 0.0
    se = math.sqrt(var / n)
    z = _z(level)
    return PairedDifference(mean, se, mean - z * se, mean + z * se, n)


def _z(level: float) -> float:
    """Two-sided normal quantile for a confidence level (0.90 → 1.645, 0.95 → 1.960)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests of |difference| < margin, and the one-sided test of difference > margin."""

    difference: PairedDifference  # with a 90 % interval: the TOST interval at alpha = 0.05
    margin: float
    p_equivalent: float  # max of the two one-sided p-values (H0: |diff| ≥ margin)
    p_different: float  # H0: diff ≤ margin (the arm disagrees more than the margin allows)


def equivalence_test(x: Sequence[float], y: Sequence[float], margin: float) -> Equivalence:
    """TOST on paired differences, with one pseudo-pair each way (+1 and −1) added before the Wald interval — the
    Agresti–Min idea for paired proportions: zero disagreements in 20 rows must not look like certainty."""
    if not x:
        diff = paired_difference([], [], level=0.90)
        return Equivalence(diff, margin, float("nan"), float("nan"))
    diff = paired_difference([*x, 1.0, 0.0], [*y, 0.0, 1.0], level=0.90)
    p_lower = 1 - _phi((diff.value + margin) / diff.se)  # H0: diff ≤ −margin
    p_upper = 1 - _phi((margin - diff.value) / diff.se)  # H0: diff ≥ +margin
    p_diff = 1 - _phi((diff.value - margin) / diff.se)
    return Equivalence(diff, margin, max(p_lower, p_upper), p_diff)


def rows_for_equivalence(margin: float, arm_disagreement: float, floor_disagreement: float, power: float = 0.8,
                         alpha: float = 0.05) -> int:
    """Rows needed for the equivalence test (TOST, paired, normal approximation) to show |diff| < margin.

    Per row d = x − y with x ~ Bernoulli(arm_disagreement) and y ~ Bernoulli(floor_disagreement), independent:
    var(d) = p_a(1 − p_f) + p_f(1 − p_a) − θ², θ = p_a − p_f. With θ = 0 both one-sided tests share the type-II
    error: n = (z_{1−α} + z_{1−β/2})² var / margin²; otherwise n = (z_{1−α} + z_{1−β})² var / (margin − |θ|)².
    """
    from scipy.stats import norm

    if not 0 < margin < 1:
        raise ValueError("margin must be in (0, 1)")
    theta = arm_disagreement - floor_disagreement
    if abs(theta) >= margin:
        raise ValueError(f"an expected difference of {theta:+.3f} is not within the margin {margin}: no sample size shows equivalence")
    var = (arm_disagreement * (1 - floor_disagreement) + floor_disagreement * (1 - arm_disagreement) - theta * theta)
    z_alpha = norm.ppf(1 - alpha)
    z_beta = norm.ppf(1 - (1 - power) / 2) if theta == 0 else norm.ppf(power)
    k = (z_alpha + z_beta) ** 2 / (margin - abs(theta)) ** 2
    if var == 0:  # no disagreement expected: only the test's two pseudo-pairs (variance 2 / (n + 2)) remain
        return max(2, math.ceil(math.sqrt(2 * k)))
    return max(2, math.ceil(k * var))
