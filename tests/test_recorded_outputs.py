"""The parser on all 4,000 real gpt-oss responses recorded by the original study."""

from __future__ import annotations

import polars as pl
import pytest

from toxcmp.parsing import parse_output
from toxcmp.policies import load_policy

from .conftest import RECORDED, require_shared

# Answers from which the study's parser pulled a label although they are not labels (stories, lists, code,
# HTML after jailbreak prompts). Identified by (model_name, conv_id prefix); ours must return no label.
STUDY_FALSE_LABELS = 27


@pytest.fixture(scope="module")
def recorded() -> pl.DataFrame:
    require_shared(RECORDED)
    frames = [pl.read_parquet(p) for p in sorted(RECORDED.glob("api_*_toxic_simple_n2000.parquet"))]
    return pl.concat(frames)


@pytest.fixture(scope="module")
def parsed(recorded):
    policy = load_policy("toxic_simple")
    return [parse_output(text, policy)[1] for text in recorded["raw_model_response"].to_list()]


def test_counts_on_all_4000_recorded_responses(recorded, parsed):
    assert len(parsed) == 4000
    assert sum(v.parse_ok for v in parsed) == 3840
    assert sum(v.refusal for v in parsed) == 82
    assert sum(not v.parse_ok and not v.refusal for v in parsed) == 78
    assert all(v.parse_error for v in parsed if not v.parse_ok)


def test_bare_labels_match_the_study(recorded, parsed):
    bare = 0
    for row, verdict in zip(recorded.iter_rows(named=True), parsed):
        if row["raw_model_response"] in ("0", "1"):
            bare += 1
            assert verdict.binary_label == int(row["predicted_label"]), row["conv_id"]
    assert bare == 3840


def test_non_label_answers_the_study_parsed_get_no_label(recorded, parsed):
    wrong = [(row["model_name"], row["conv_id"][:12], row["raw_model_response"][:50])
             for row, v in zip(recorded.iter_rows(named=True), parsed)
             if row["parsed_successfully"] and row["raw_model_response"] not in ("0", "1")]
    assert len(wrong) == STUDY_FALSE_LABELS, wrong
    by_key = {(row["model_name"], row["conv_id"][:12]): v for row, v in zip(recorded.iter_rows(named=True), parsed)}
    for model_name, conv, preview in wrong:
        verdict = by_key[(model_name, conv)]
        assert verdict.binary_label is None and not verdict.parse_ok, (model_name, conv, preview)
