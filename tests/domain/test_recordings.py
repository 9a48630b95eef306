"""The recorded study's layouts, read in one place (`toxcmp.domain.recordings`) for both the `recorded` backend
and `rescore`. Expected values are the frames' own cells, written out here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import polars as pl

from toxcmp.domain import recordings
from toxcmp.domain.tokens import eos_ids

PAIR = pl.DataFrame({"conv_id": ["c1", None], "text": ["hello", "you idiot"], "ground_truth": [0, 1],
                     "api_response": ["0", None], "api_reasoning": ["fine", None],
                     "local_response": ["1", "1"], "local_reasoning": [None, "rude"]})
SINGLE = pl.DataFrame({"conv_id": ["c1", "c2"], "user_input": ["hello", "you idiot"], "toxicity": [0, 1],
                       "jailbreaking": [0, None], "sample_weight": [2.5, None], "raw_model_response": ["0", "1"],
                       "model_reasoning": ["ok", ""], "model_used": ["groq/x", "groq/x"],
                       "model_name": ["gpt-oss-20b", "gpt-oss-20b"]})


def test_a_pair_file_gives_each_side_with_its_own_answers():
    assert recordings.is_pair(PAIR.columns, scored=True) and not recordings.is_single(PAIR.columns)
    api = recordings.read_pair(PAIR, "api")
    local = recordings.read_pair(PAIR, "local")
    assert [(a.conv_id, a.text, a.toxicity, a.content, a.reasoning, a.served_by) for a in api] == [
        ("c1", "hello", 0, "0", "fine", "api"), (None, "you idiot", 1, "", "", "api")]
    assert [(a.content, a.reasoning, a.served_by, a.weight) for a in local] == [("1", "", "local", 1.0),
                                                                               ("1", "rude", "local", 1.0)]


def test_a_single_file_gives_its_answers_weights_and_model():
    assert recordings.is_single(SINGLE.columns, scored=True) and not recordings.is_pair(SINGLE.columns)
    assert not recordings.is_single(SINGLE.drop("toxicity").columns, scored=True)  # replayable, not scorable
    assert recordings.is_single(SINGLE.drop("toxicity").columns)
    got = recordings.read_single(SINGLE)
    assert [(a.conv_id, a.text, a.toxicity, a.jailbreaking, a.weight, a.content, a.reasoning, a.served_by)
            for a in got] == [("c1", "hello", 0, 0, 2.5, "0", "ok", "groq/x"),
                              ("c2", "you idiot", 1, None, 1.0, "1", "", "groq/x")]
    assert recordings.single_label(Path("api_a.parquet"), SINGLE) == "gpt-oss-20b"
    assert recordings.single_label(Path("api_a.parquet"), SINGLE.drop("model_name")) == "api_a"


def test_study_provenance_comes_from_the_file_name():
    meta = recordings.study_meta([Path("backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet")],
                                 ["api", "local"])
    assert meta["model"] == {"name": "gpt-oss-safeguard-20b", "harmony": True}
    assert meta["policy"] == {"name": "toxic_chat_claude_1"} and meta["recorded_study"] is True
    assert meta["backends"] == [{"label": "api", "name": "api"}, {"label": "local", "name": "local"}]


def test_eos_ids_join_the_generation_config_and_the_tokenizer():
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 7]))
    assert eos_ids(model, SimpleNamespace(eos_token_id=5)) == {2, 5, 7}
    assert eos_ids(SimpleNamespace(generation_config=SimpleNamespace()), SimpleNamespace(eos_token_id=None)) == set()


def test_reasoning_leaked_into_a_study_response_column_is_split_and_the_column_kept_as_raw():
    leaked = ("<|channel|>analysis<|message|>It threatens violence.<|end|>"
              "<|start|>assistant<|channel|>final<|message|>1<|return|>")
    frame = pl.DataFrame({"conv_id": ["h", "c", "t", "f"], "text": ["a", "b", "c", "d"], "ground_truth": [1, 0, 1, 0],
                          "api_response": [leaked, "analysisPolite.assistantfinal0", "<think>Slur.</think>1", "0"],
                          "api_reasoning": [None, None, None, "Weather."],
                          "local_response": ["1"] * 4, "local_reasoning": [None] * 4})
    got = [(a.content, a.reasoning, a.raw, a.reasoning_source) for a in recordings.read_pair(frame, "api")]
    assert got == [("1", "It threatens violence.", leaked, "harmony"),
                   ("0", "Polite.", "analysisPolite.assistantfinal0", "collapsed"),
                   ("1", "Slur.", "<think>Slur.</think>1", "think_tag"),
                   ("0", "Weather.", "", "field")]  # a plain final answer: no raw output recorded
    single = pl.DataFrame({"conv_id": ["h"], "user_input": ["a"], "toxicity": [1], "raw_model_response": [leaked],
                           "model_reasoning": [""]})
    [a] = recordings.read_single(single)
    assert (a.content, a.reasoning, a.raw, a.reasoning_source) == ("1", "It threatens violence.", leaked, "harmony")
