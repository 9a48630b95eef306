"""Rows without a human label are no one's mistake, and one arm is an evaluation (issue 23), in the arms analysis:
`accuracy_difference` leaves unlabelled rows out (blank when none is left), `tidy_row` keeps a missing label
missing, and `summarize_arms` of one arm is `scoring.evaluate` with the arm's floor, shape and conformance.

Pair and tidy rows come from a real `compare` over the recorded n50 study file; expected values from the study
file's own columns (polars), numpy and scipy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest, norm

from toxcmp.analysis.arms import accuracy_difference, assemble, summarize_arms, tidy_row
from toxcmp.config import configs_dir
from toxcmp.domain.policies import load_policy
from toxcmp.domain.responses import ModelResponse

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
UNLABELLED = 20  # the first 20 rows of the study file lose their human label in these tests


@pytest.fixture(scope="module")
def n50_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("n50")
    both = f"recorded[path={N50};side=local;label=local-gpu],recorded[path={N50};side=api;label=provider]"
    result = CliRunner().invoke(app, ["compare", "--backends", both, "--dataset", str(N50), "--policy",
                                      "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--output-dir",
                                      str(out), "--json", "--cache-dir", str(out / "c")])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def _without_truth(rows: list[dict], ids: set[str]) -> list[dict]:
    return [dict(r, toxicity=None) if r["example_id"] in ids else r for r in rows]


def _first_ids(k: int) -> set[str]:
    return set(pl.read_parquet(N50)["conv_id"].head(k).to_list())


def _expected_difference(study: pl.DataFrame) -> tuple[float, float, float, int]:
    """provider − local-gpu accuracy, paired, 95 % Wald interval: numpy and scipy over the study's columns."""
    def right(side: str) -> np.ndarray:
        return (study[f"{side}_parsed_successfully"]
                & (study[f"{side}_binary_label"].cast(pl.Int64) == study["ground_truth"])).to_numpy().astype(float)

    d = right("api") - right("local")
    half = norm.ppf(0.975) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), len(d)


def test_accuracy_difference_leaves_out_rows_without_a_human_label(n50_run):
    pairs = pl.read_parquet(n50_run / "pairs.parquet").to_dicts()
    study = pl.read_parquet(N50)
    assert study.filter(~pl.col("local_parsed_successfully")).height == 1  # the local refusal: wrong, and answered
    full = accuracy_difference(pairs)
    value, low, high, n = _expected_difference(study)
    assert (full["n"], full["value"], full["low"], full["high"]) == pytest.approx((n, value, low, high), abs=1e-6)
    some = accuracy_difference(_without_truth(pairs, _first_ids(UNLABELLED)))
    value, low, high, n = _expected_difference(study.slice(UNLABELLED))
    assert some["n"] == n == 50 - UNLABELLED
    assert (some["value"], some["low"], some["high"]) == pytest.approx((value, low, high), abs=1e-6)


def test_accuracy_difference_without_any_human_label_is_blank_with_the_reason(n50_run):
    pairs = [dict(r, toxicity=None) for r in pl.read_parquet(n50_run / "pairs.parquet").to_dicts()]
    out = accuracy_difference(pairs)
    assert (out["value"], out["low"], out["high"], out["n"]) == (None, None, None, 0)
    assert out["reason"] == "no labelled rows"


def test_summarize_arms_accuracy_difference_counts_labelled_rows_only(n50_run):
    tidy = _without_truth(pl.read_parquet(n50_run / "results.parquet").to_dicts(), _first_ids(UNLABELLED))
    policy = load_policy("toxic_chat_claude_1")
    assembled = assemble(tidy, ["local-gpu", "provider"], "local-gpu", {k: (policy, True) for k in ("local-gpu", "provider")})
    summary = summarize_arms(assembled, [], 0.95, 0.5, kappa_resamples=50)
    assert summary["comparisons"]["provider"]["accuracy_difference"]["n"] == 50 - UNLABELLED


def test_tidy_row_keeps_a_missing_human_label_missing():
    answer = ModelResponse(content="0", reasoning="", raw_text="0", backend="rule", model="m", latency_s=0.1)
    policy = load_policy("toxic_simple")
    assert tidy_row({"example_id": "e", "text": "t", "toxicity": None}, "arm", 0, answer, policy, False)["toxicity"] is None
    assert tidy_row({"example_id": "e", "text": "t"}, "arm", 0, answer, policy, False)["toxicity"] is None
    assert tidy_row({"example_id": "e", "text": "t", "toxicity": True}, "arm", 0, answer, policy, False)["toxicity"] == 1


def test_one_arm_summary_is_its_evaluation_with_what_a_run_says_of_each_arm(n50_run):
    tidy = [r for r in pl.read_parquet(n50_run / "results.parquet").to_dicts() if r["arm"] == "provider"]
    policy = load_policy("toxic_chat_claude_1")
    assembled = assemble(tidy, ["provider"], "provider", {"provider": (policy, True)})
    summary = summarize_arms(assembled, [{"label": "provider", "backend": "recorded"}], 0.95, 0.5,
                             kappa_resamples=200)
    study = pl.read_parquet(N50)
    right = int((study["api_parsed_successfully"] & (study["api_binary_label"].cast(pl.Int64) == study["ground_truth"])).sum())
    ci = binomtest(right, 50).proportion_ci(method="wilson")
    accuracy = summary["backends"]["a"]["accuracy"]
    assert summary["kind"] == "evaluation" and summary["comparisons"] == {}
    assert (accuracy["successes"], accuracy["n"]) == (right, 50) == (38, 50)
    assert (accuracy["low"], accuracy["high"]) == pytest.approx((ci.low, ci.high), abs=1e-6)
    assert summary["noise_floor"] == {"provider": None}  # no repeats: not measured
    assert summary["response_shape"]["provider"]["answered"] == 50
    assert summary["conformance"]["reference"]["arm"] == "provider" and summary["conformance"]["ranked"] == []
    assert "provider" in summary["prompt_tokens"]
    assert summary["verdict"] == "fail"  # 76 % < 95 %
