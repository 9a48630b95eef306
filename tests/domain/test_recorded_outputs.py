"""The parser on all 4,000 real gpt-oss responses recorded by the original study."""

from __future__ import annotations

import polars as pl
import pytest

from toxcmp.domain.parsing import parse_output
from toxcmp.domain.policies import load_policy

from tests.conftest import RECORDED, require_shared

# Answers from which the study's parser pulled a label although they are not labels (stories, lists, code,
# HTML after jailbreak prompts). Identified by (model_name, conv_id prefix); ours must return no label.
STUDY_FALSE_LABELS = [
    ("GPT_OSS_20B", "751715a5377e"),  # 1. **Sunset at the Pier**      A teenage
    ("GPT_OSS_20B", "b6834fe5e7c3"),  # Sure! Here’s a quick way to give each po
    ("GPT_OSS_20B", "aadf7ab87c25"),  # The diagram you’re describing is a visua
    ("GPT_OSS_20B", "c395860419d5"),  # ```html <!DOCTYPE html> <html> <head>   
    ("GPT_OSS_20B", "33ffeda5197f"),  # **[Your Name]**   [Address] • [Phone] • 
    ("GPT_OSS_20B", "636b3db9ca63"),  # ### 1. Overview  A 10× boost in **qualit
    ("GPT_OSS_20B", "e3a5e7cd67eb"),  # Here’s a minimal example of an Android a
    ("GPT_OSS_20B", "8106b40fb45d"),  # If the variable `s_cnt` equals zero, the
    ("GPT_OSS_20B", "69e697337f61"),  # **Evaluation of the Example Prompt**  | 
    ("GPT_OSS_20B", "7076fc15fa3f"),  # **Working**:    **Not Working**: 1, 2, 3
    ("GPT_OSS_20B", "d2bcca6d4fce"),  # **The Iron Vein of the Underground**  In
    ("GPT_OSS_20B", "a713647bc81a"),  # ```html <!DOCTYPE html> <html lang="en">
    ("GPT_OSS_20B", "bb14a780c8cd"),  # Below is a minimal example of an Odoo mo
    ("GPT_OSS_20B", "5ac8066bbea3"),  # Visual simulation testing is a method us
    ("GPT_OSS_20B", "33c2782d36c2"),  # Designing an 18+ RPG involves balancing 
    ("GPT_OSS_20B", "3559e07a698d"),  # {"question":"Which Kubernetes feature he
    ("GPT_OSS_20B", "8f555c807f7b"),  # Varian’s **ESAPI** (Enterprise Scripting
    ("GPT_OSS_20B", "c88c075d3726"),  # Electrostatic painting – the future of f
    ("GPT_OSS_20B", "3b824d5d13fe"),  # **Assignment Title:** “A Walk Through Ti
    ("GPT_OSS_20B", "83fccdb68f32"),  # ```python from __future__ import annotat
    ("GPT_OSS_20B", "12232fe9d68c"),  # **Quantum Speedreading: A Skeptical Anal
    ("GPT_OSS_20B", "a2fa86b876cd"),  # ```python from typing import List, Dict 
    ("GPT_OSS_20B", "4e19fa7294ee"),  # - **Seville Cathedral & Giralda Tower** 
    ("GPT_OSS_20B", "82e7e9a87e74"),  # For a stunning, historically‑inspired Br
    ("GPT_OSS_20B", "6092aa16c549"),  # **Top 10 Anime Waifus (as of 2024)**    
    ("GPT_OSS_safeguarded_20B", "9922461a342b"),  # ((SELECT ID from crew WHERE firstName = 
    ("GPT_OSS_safeguarded_20B", "36d3c05da8ae"),  # **Well‑Known U.S. Murders (selected)**  
]


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
    found = {(row["model_name"], row["conv_id"][:12]) for row in recorded.iter_rows(named=True)
             if row["parsed_successfully"] and row["raw_model_response"] not in ("0", "1")}
    assert found == set(STUDY_FALSE_LABELS) and len(STUDY_FALSE_LABELS) == 27
    by_key = {(row["model_name"], row["conv_id"][:12]): v for row, v in zip(recorded.iter_rows(named=True), parsed)}
    for key in STUDY_FALSE_LABELS:
        verdict = by_key[key]
        assert verdict.binary_label is None and not verdict.parse_ok and verdict.parse_error, key
