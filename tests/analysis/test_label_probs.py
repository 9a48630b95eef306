"""Issue 24: label probabilities and calibration, against scipy (AUROC as Mann–Whitney U / n₁n₀) and hand counts
on small tables."""

from __future__ import annotations

import math

import pytest
from scipy.stats import mannwhitneyu

from toxcmp.analysis.label_probs import (auroc, brier, ece, label_offset, label_set, p_violating_from_top, token_at,
                                         paired_delta, reliability_bins)

SCORES = [0.9, 0.8, 0.35, 0.35, 0.2, 0.6, 0.1, 0.7]
TRUTH = [1, 1, 1, 0, 0, 0, 0, 1]


def test_auroc_is_mann_whitney_u_over_the_pairs_ties_counting_half():
    pos = [s for s, y in zip(SCORES, TRUTH) if y]
    neg = [s for s, y in zip(SCORES, TRUTH) if not y]
    u = mannwhitneyu(pos, neg).statistic
    assert auroc(SCORES, TRUTH) == pytest.approx(u / (len(pos) * len(neg)))
    assert auroc([0.5, 0.5], [1, 1]) is None  # one class: undefined, not 0.5


def test_brier_and_ece_by_hand():
    assert brier([0.9, 0.2], [1, 0]) == pytest.approx((0.01 + 0.04) / 2)
    # bins of width 0.1: [0.1] → 0.1 vs 0/1, [0.9, 0.95] → 0.925 vs 1/2
    scores, truth = [0.1, 0.9, 0.95], [0, 1, 0]
    bins = reliability_bins(scores, truth)
    assert [(b["n"], round(b["mean_p"], 6), b["share_violating"]) for b in bins] == [(1, 0.1, 0.0), (2, 0.925, 0.5)]
    assert ece(scores, truth) == pytest.approx((1 * 0.1 + 2 * abs(0.925 - 0.5)) / 3)


def test_p_violating_from_the_top_k_needs_every_label():
    categories = (("0", 0), ("1", 1))
    top = [["1", math.log(0.6)], [" 0", math.log(0.2)], ["I", math.log(0.1)]]
    assert p_violating_from_top(top, categories) == pytest.approx(0.6 / 0.8)
    assert p_violating_from_top([["1", -0.1], ["I", -3.0]], categories) is None  # "0" not in the top K: unknown


def test_paired_delta_by_hand_and_its_interval_holds_the_mean():
    d = paired_delta({"a": 0.9, "b": 0.4, "c": 0.5}, {"a": 0.8, "b": 0.6, "d": 0.1})
    assert d["n"] == 2 and d["mean"] == pytest.approx(-0.05) and d["mean_abs"] == pytest.approx(0.15)
    assert d["max_abs"] == pytest.approx(0.2) and d["worst"] == "b"
    assert d["low"] <= d["mean"] <= d["high"]


def test_the_label_is_read_where_each_answer_form_writes_it():
    from toxcmp.domain.policies import load_policy

    label, json_ = load_policy("toxic_simple"), load_policy("toxic_chat_claude_1")
    assert json_.output == "json" and label.output == "label"
    assert label_offset("  1", label, False) == 2  # a plain answer: its first character
    assert label_offset('{"violation": 1, "category": "x"}', json_, False) == len('{"violation": ')
    assert label_offset('{"category": "x", "Violation":"0"}', json_, False) == len('{"category": "x", "Violation":"')
    assert label_offset('{"category": "x"}', json_, False) is None  # no label key: no position
    harmony = "<|channel|>analysis<|message|>It is 1? no.<|end|><|start|>assistant<|channel|>final<|message|>0<|return|>"
    assert label_offset(harmony, label, True) == harmony.index("0<|return|>")
    assert label_offset("<|channel|>analysis<|message|>thinking, cut off", label, True) is None
    assert label_offset("1", label, True) == 0  # a server that parsed the channels sends the final message alone
    assert label_offset("<think>maybe 1</think>\n0", label, False) == len("<think>maybe 1</think>\n")
    assert label_set(json_) == (("0", 0), ("1", 1))


def test_the_token_covering_the_label_and_what_it_spells_before_it():
    tokens = ['{"', "violation", '":', " 1", ",", ' "category"']
    offset = len('{"violation": ')
    assert token_at(tokens, offset) == (3, " ")
    assert token_at(tokens, 0) == (0, "") and token_at(tokens, 999) is None
    categories = (("0", 0), ("1", 1))
    top = [[" 1", math.log(0.5)], [" 0", math.log(0.2)], ["1", math.log(0.1)], [" 10", math.log(0.1)],
           ["0", math.log(0.05)], ["\n1", math.log(0.05)]]
    # alternatives must spell " " first: "1", "0" and "\n1" without it are other positions' tokens; " 10" is not a
    # label
    assert p_violating_from_top(top, categories, before=" ") == pytest.approx(0.5 / 0.7)
    # two spellings of one label add up
    top = [[" 1", math.log(0.3)], [" 1}", math.log(0.2)], [" 0", math.log(0.25)]]
    assert p_violating_from_top(top, categories, before=" ") == pytest.approx(0.5 / 0.75)


def test_the_parity_headline_names_label_agreement_then_the_probability_gap():
    from toxcmp.analysis.label_probs import label_prob_lines

    d = paired_delta({"a": 0.9, "b": 0.4}, {"a": 0.8, "b": 0.6})
    summary = {"headline": {"arm": "api"}, "binary_agreement": {"value": 0.96},
               "label_probs": {"reference": "local", "arms": {}, "paired": {"api": d}}}
    assert label_prob_lines(summary)[0] == "labels agree 96.0%; p(violating) differs by 0.150 on average (max 0.200) over 2 rows"
