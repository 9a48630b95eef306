"""`toxcmp bench logprobs` runs end to end on tiny settings: the figures it prints are the ones it measured (the
ratios are its own times divided, the verdict on the goal follows the ratio), and a part that measured nothing
prints no figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # loads the bundled model; speed is printed, never asserted

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "samples" / "toxicchat0124_test_sample.csv"


def test_bench_logprobs_json_on_tiny_settings(cli):
    result = cli("bench", "logprobs", "--rows", "2", "--max-new-tokens", "4", "--dataset", str(SAMPLE), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 2 and data["max_new_tokens"] == 4 and data["strategy"] == "prefix"
    assert data["policy"] == "toxic_chat_claude_1" and data["threads"] >= 1
    assert data["generate_s"] > 0 and data["forced_every_token_s"] > 0 and data["teacher_forcing_s"] >= 0
    assert data["scored_answers"] == "llama-cpp-python in process" and 0 <= data["answers_identical"] <= 2
    # every answer scored: at least one token each (llama.cpp re-encoded by the local tokenizer may split finer)
    assert data["scored_tokens"] >= 2
    assert 0 <= data["tokens_reused"] <= data["scored_tokens"]
    assert 0 <= data["tails_reused"] <= 2  # rows forced over the KV the recording run kept (none: all read)
    assert data["prefix_tokens_found"] > 100  # ... after the shared prefix it computed (toxic_chat_claude_1: ~600)
    assert data["teacher_forcing_ratio"] == pytest.approx(data["teacher_forcing_s"] / data["generate_s"], abs=2e-3)
    assert data["recording_ratio"] == pytest.approx(data["generate_with_logprobs_s"] / data["generate_s"], abs=2e-3)
    assert data["forced_every_token_ratio"] == pytest.approx(data["forced_every_token_s"] / data["generate_s"],
                                                             abs=2e-3)
    assert data["met"] == (data["teacher_forcing_ratio"] <= data["goal"]) and data["goal"] == 0.25
    # four tokens cannot reach a JSON label: no label position, so no label-probability figure at all
    assert data["label_rows"] == 0
    assert data["label_probs_s"] is None and data["label_probs_ratio"] is None


def test_bench_logprobs_without_a_dataset_is_a_one_line_usage_error(cli, tmp_path):
    result = cli("bench", "logprobs", "--dataset", str(tmp_path / "missing.csv"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "no dataset at" in result.output and "--dataset" in result.output
