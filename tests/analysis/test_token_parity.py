"""Issue 24: an arm's tokens aligned to the local model's by the characters they cover, and the per-row and per-arm
|Δ log p|, checked against hand counts on small tables."""

from __future__ import annotations

import pytest

from toxcmp.analysis.token_parity import LocalScores, align, arm_parity, row_parity, spans_of

TEXT = "I'm an idiot"
ARM = [{"token": "I", "logprob": -0.5, "top": [["I", -0.5], ["You", -1.0]]},
       {"token": "'m", "logprob": -0.25, "top": [["'m", -0.25]]},
       {"token": " an", "logprob": -1.0, "top": [[" an", -1.0], [" a", -1.5]]},
       {"token": " idiot", "logprob": -2.0, "top": []}]
# the local tokenizer splits " idiot" in two: those characters cannot be compared token for token
LOCAL = LocalScores(spans=spans_of(["I", "'m", " an", " id", "iot"]), logprobs=[-0.75, -0.25, -1.5, -3.0, -0.1],
                    top1=[True, True, False, True, True],
                    top=[["I", "We"], ["'m", "'d"], [" a", " the"], [" id"], ["iot"]])


def test_tokens_align_by_characters_and_a_different_split_is_unaligned():
    scored = align(ARM, TEXT, LOCAL)
    assert [s["local_logprob"] for s in scored] == [-0.75, -0.25, -1.5, None]
    assert [s["local_top1"] for s in scored] == [True, True, False, None]
    assert [s["top_overlap"] for s in scored] == [0.5, 1.0, 0.5, None]


def test_a_row_s_deltas_by_hand():
    row = row_parity(ARM, align(ARM, TEXT, LOCAL))
    # Δ = arm − local: +0.25, 0, +0.5 → mean 0.25, max 0.5 at " an"
    assert row["aligned"] == 3 and row["unaligned"] == 1
    assert row["mean_abs_delta"] == pytest.approx(0.25) and row["max_abs_delta"] == pytest.approx(0.5)
    assert row["worst"] == {"position": 2, "token": " an", "arm_logprob": -1.0, "local_logprob": -1.5}
    assert row["top1_share"] == pytest.approx(2 / 3)


def test_tokens_that_stop_spelling_the_text_are_unaligned_from_there_on():
    other = [dict(ARM[0]), {"token": " am", "logprob": -0.1, "top": []}, dict(ARM[2])]
    scored = align(other, TEXT, LOCAL)
    assert [s["local_logprob"] for s in scored] == [-0.75, None, None]


def test_an_arm_weights_rows_by_their_aligned_tokens():
    a = dict(row_parity(ARM, align(ARM, TEXT, LOCAL)), example_id="a")  # 3 tokens, mean 0.25
    b = {"aligned": 1, "unaligned": 0, "mean_abs_delta": 1.25, "max_abs_delta": 1.25, "top1_share": 0.0,
         "worst": {"position": 0, "token": "x", "arm_logprob": -2.0, "local_logprob": -0.75}, "example_id": "b"}
    arm = arm_parity([a, b])
    assert arm["aligned"] == 4 and arm["unaligned"] == 1 and arm["rows"] == 2
    assert arm["mean_abs_delta"] == pytest.approx((3 * 0.25 + 1.25) / 4)
    assert arm["max_abs_delta"] == pytest.approx(1.25) and arm["worst"]["example_id"] == "b"
    assert arm["top1_share"] == pytest.approx((3 * 2 / 3 + 0) / 4)
