"""Metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest

from toxcmp.metrics import accuracy_report, agreement, cohen_kappa, kappa_with_bootstrap, mcnemar_exact, wilson


def test_wilson_hand_computed():
    # p = 49/50, z = 1.96: centre = (0.98 + 3.8415/100)/(1 + 3.8415/50) = 0.94600; half = 0.04088…
    w = wilson(49, 50)
    assert w.value == pytest.approx(0.98)
    assert w.low == pytest.approx(0.8950, abs=5e-4) and w.high == pytest.approx(0.9965, abs=5e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == pytest.approx(1.0)
    assert math.isnan(wilson(0, 0).value)


def test_agreement_excludes_missing_pairs():
    a = [1, 0, 1, None, 0]
    b = [1, 1, 1, 0, None]
    p = agreement(a, b)
    assert (p.successes, p.n) == (2, 3)


def test_cohen_kappa_hand_computed():
    # 2x2: both 1: 20, a1 b0: 5, a0 b1: 10, both 0: 15 → po = 0.7; pa1 = 0.5, pb1 = 0.6 → pe = 0.3 + 0.2 = 0.5
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == 1.0
    est = kappa_with_bootstrap(a, b, resamples=500)
    assert est.value == pytest.approx(0.4) and est.low < 0.4 < est.high


def test_mcnemar_exact_hand_computed():
    # discordant: 1 vs 6 → p = 2 * P(X ≤ 1 | n=7, 0.5) = 2 * (1 + 7) / 128 = 0.125
    a = [True] * 10 + [True] * 1 + [False] * 6
    b = [True] * 10 + [False] * 1 + [True] * 6
    m = mcnemar_exact(a, b)
    assert (m.only_a_correct, m.only_b_correct) == (1, 6) and m.p_value == pytest.approx(0.125)
    assert mcnemar_exact([True], [True]).p_value == 1.0


def test_accuracy_report_hand_computed():
    truth = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 0, 1, 0, 0, None]
    r = accuracy_report(truth, pred)
    cm = r.confusion
    assert (cm.tp, cm.fp, cm.fn, cm.tn, cm.missing) == (2, 1, 1, 3, 1)
    assert r.accuracy.value == pytest.approx(5 / 7)
    assert r.precision.value == pytest.approx(2 / 3) and r.recall.value == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 / 3)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        agreement([1], [1, 0])
