"""Metrics against values computed by hand or by an independent implementation (numpy loops, scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toxcmp.analysis.metrics import (Estimate, classification_report, cohen_kappa, kappa_with_bootstrap, mcnemar_exact,
                            weighted_proportion, wilson, wilson_interval)


def hand_wilson(p: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval, written out here so the tests do not trust toxcmp's own."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def hand_kappa(a, b) -> float:
    """Cohen's kappa for 0/1 labels from the 2×2 counts; NaN when chance agreement is 1."""
    n = len(a)
    both1 = sum(1 for x, y in zip(a, b) if x == 1 and y == 1)
    both0 = sum(1 for x, y in zip(a, b) if x == 0 and y == 0)
    a1, b1 = sum(a) / n, sum(b) / n
    po = (both1 + both0) / n
    pe = a1 * b1 + (1 - a1) * (1 - b1)
    return float("nan") if pe == 1 else (po - pe) / (1 - pe)


# 2x2: both 1: 20, a1 b0: 5, a0 b1: 10, both 0: 15 → po = 0.7; pa1 = 0.5, pb1 = 0.6 → pe = 0.3 + 0.2 = 0.5
A = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
B = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15


def test_wilson_hand_computed():
    # p = 49/50, z = 1.96: centre = (0.98 + 3.8415/100)/(1 + 3.8415/50) = 0.94600; half = 0.04088…
    w = wilson(49, 50)
    assert w.value == pytest.approx(0.98)
    assert w.low == pytest.approx(0.8950, abs=5e-4) and w.high == pytest.approx(0.9965, abs=5e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == pytest.approx(1.0)
    assert math.isnan(wilson(0, 0).value)


def test_wilson_interval_is_continuous_in_p_and_n():
    # the case: p = 0.526 on Kish n_eff = 3.31 is (0.146, 0.878); rounding to 2 of 3 gave (0.208, 0.939)
    assert wilson_interval(0.526, 3.31) == pytest.approx(hand_wilson(0.526, 3.31), abs=1e-12)
    assert wilson_interval(0.526, 3.31) == pytest.approx((0.146, 0.878), abs=5e-4)


def test_weighted_proportion_uses_unrounded_p_and_effective_n():
    hits = [True, True, False, False, True]
    weights = [3.0, 1.0, 2.0, 1.5, 0.5]
    total = sum(weights)
    p = (3.0 + 1.0 + 0.5) / total
    n_eff = total**2 / sum(w * w for w in weights)  # Kish: 64 / 16.5 = 3.879
    assert p * n_eff != round(p * n_eff)  # a case where rounding would move the interval
    got = weighted_proportion(hits, weights)
    assert got.value == pytest.approx(p)
    assert (got.low, got.high) == pytest.approx(hand_wilson(p, n_eff), abs=1e-12)


def test_kappa_skips_pairs_with_a_missing_side():
    a = [1, 0, 1, None, 0, 1, 0]
    b = [1, 1, 1, 0, None, 0, 0]
    assert cohen_kappa(a, b) == pytest.approx(hand_kappa([1, 0, 1, 1, 0], [1, 1, 1, 0, 0]))


def test_cohen_kappa_hand_computed():
    assert cohen_kappa(A, B) == pytest.approx(0.4) == hand_kappa(A, B)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    assert cohen_kappa([1] * 5, [0] * 5) == 0.0  # constant but different: chance agreement 0, kappa defined


@pytest.mark.parametrize("a, b", [([0] * 10, [0] * 10), ([1] * 7, [1] * 7), ([None, 1, 1], [0, 1, 1])])
def test_kappa_undefined_when_both_sides_give_one_constant_label(a, b):
    assert math.isnan(cohen_kappa(a, b))
    est = kappa_with_bootstrap(a, b, resamples=200)
    assert math.isnan(est.value) and math.isnan(est.low) and math.isnan(est.high)
    assert est.reason and "constant" in est.reason


def test_kappa_without_pairs_says_so():
    est = kappa_with_bootstrap([None, 1], [0, None])
    assert math.isnan(est.value) and est.reason and "no pairs" in est.reason and est.undefined_resamples == 0


def test_bootstrap_excludes_and_counts_undefined_resamples():
    # the case: one 1 among 50 on side a, b all 0. kappa = 0 (po = pe = 0.98). A resample that misses the
    # single 1 has both sides constant 0: undefined, so it is left out, not counted as kappa = 1.
    a, b = [1] + [0] * 49, [0] * 50
    resamples, seed = 1000, 3
    est = kappa_with_bootstrap(a, b, resamples=resamples, seed=seed)
    idx = np.random.default_rng(seed).integers(0, 50, size=(resamples, 50))
    without_the_one = int((~(idx == 0).any(axis=1)).sum())
    assert 0.25 * resamples < without_the_one < 0.5 * resamples  # (49/50)^50 = 0.364
    assert est.value == 0.0 and est.undefined_resamples == without_the_one
    assert (est.low, est.high) == (0.0, 0.0) and est.reason is None


def test_bootstrap_ci_matches_an_independent_percentile_bootstrap():
    """Same seed scheme, kappa per resample from the 2×2 counts in a plain loop, numpy's percentile."""
    resamples, seed = 2000, 7
    est = kappa_with_bootstrap(A, B, resamples=resamples, seed=seed)
    a, b = np.array(A), np.array(B)
    idx = np.random.default_rng(seed).integers(0, len(A), size=(resamples, len(A)))
    kappas = np.array([hand_kappa(a[i].tolist(), b[i].tolist()) for i in idx])
    kappas = kappas[~np.isnan(kappas)]
    low, high = np.percentile(kappas, [2.5, 97.5])
    assert est.value == pytest.approx(0.4)
    assert (est.low, est.high) == pytest.approx((low, high), abs=1e-12)
    assert est.undefined_resamples == resamples - kappas.size == 0


def test_bootstrap_ci_agrees_with_scipy_bootstrap():
    """scipy's percentile bootstrap on another seed: endpoints agree to Monte Carlo error at 4,000 resamples."""
    from scipy.stats import bootstrap

    res = bootstrap((np.array(A), np.array(B)), lambda x, y: hand_kappa(list(x), list(y)), paired=True,
                    vectorized=False, method="percentile", n_resamples=4000, rng=np.random.default_rng(1))
    est = kappa_with_bootstrap(A, B, resamples=4000, seed=0)
    assert est.low == pytest.approx(res.confidence_interval.low, abs=0.03)
    assert est.high == pytest.approx(res.confidence_interval.high, abs=0.03)
    assert 0.1 < est.low < 0.2 and 0.6 < est.high < 0.7  # normal approximation: 0.4 ± 1.96 × 0.129


def test_estimate_keeps_its_three_field_form():
    e = Estimate(0.5, 0.1, 0.9)
    assert (e.value, e.low, e.high, e.undefined_resamples, e.reason) == (0.5, 0.1, 0.9, 0, None)


def test_mcnemar_exact_hand_computed():
    # discordant: 1 vs 6 → p = 2 * P(X ≤ 1 | n=7, 0.5) = 2 * (1 + 7) / 128 = 0.125
    a = [True] * 10 + [True] * 1 + [False] * 6
    b = [True] * 10 + [False] * 1 + [True] * 6
    m = mcnemar_exact(a, b)
    assert (m.only_a_correct, m.only_b_correct) == (1, 6) and m.p_value == pytest.approx(0.125)
    assert mcnemar_exact([True], [True]).p_value == 1.0


def test_classification_report_confusion_and_wilson_cis():
    truth = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 0, 1, 0, 0, None]
    r = classification_report(truth, pred)
    cm = r.confusion
    assert (cm.tp, cm.fp, cm.fn, cm.tn, cm.missing) == (2, 1, 1, 3, 1)
    assert r.accuracy.value == pytest.approx(5 / 8)  # the missing verdict is wrong, not left out
    assert (r.accuracy.low, r.accuracy.high) == pytest.approx(hand_wilson(5 / 8, 8), abs=1e-12)
    assert r.precision.value == pytest.approx(2 / 3) and r.recall.value == pytest.approx(2 / 4)
    assert (r.recall.low, r.recall.high) == pytest.approx(hand_wilson(2 / 4, 4), abs=1e-12)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 0])
    with pytest.raises(ValueError):
        classification_report([1], [1, 0])
