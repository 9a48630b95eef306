"""Arms (issue 13): any number of configurations against a reference, the noise floor, the equivalence verdict,
the all-arms statistics and `toxcmp plan`. Expected values come from hand calculations, published worked
examples and the recorded study's own files — never from toxcmp's output.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import polars as pl
import pytest
from scipy.stats import norm

from toxcmp.analysis import metrics
from toxcmp.analysis.arms import reasoning_effort_checks
from toxcmp.config import configs_dir
from toxcmp.domain.models import resolve_model

from tests.conftest import RECORDED, require_shared

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"


# -- statistics ---------------------------------------------------------------------------------------------------

def test_fleiss_kappa_on_the_published_worked_example():
    """Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories → P̄ = 0.378, P̄e = 0.213, κ = 0.210."""
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    assert metrics.fleiss_kappa(ratings).value == pytest.approx(0.210, abs=5e-4)
    assert math.isnan(metrics.fleiss_kappa([[1, 1], [1, 1]]).value)  # one constant label: undefined
    assert metrics.fleiss_kappa([[1, None], [0, 0], [1, 1]]).value == pytest.approx(1.0)  # incomplete items left out


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → monotone: 0.02, 0.03, 0.06, 0.06
    assert metrics.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert metrics.holm([0.0, 1.0]) == [0.0, 1.0]


def test_equivalence_test_by_hand():
    x = [1] * 6 + [0] * 94  # the arm disagrees with the reference on 6 of 100 rows
    y = [1] * 3 + [0] * 97  # the reference disagrees with itself on 3 (the same rows first)
    d = [a - b for a, b in zip(x, y)] + [1, -1]  # one pseudo-pair each way (Agresti–Min style)
    mean, se = statistics.mean(d), statistics.stdev(d) / math.sqrt(len(d))
    test = metrics.equivalence_test(x, y, margin=0.1)
    assert test.difference.value == pytest.approx(mean) and test.difference.se == pytest.approx(se)
    assert (test.difference.low, test.difference.high) == pytest.approx((mean - 1.6449 * se, mean + 1.6449 * se), abs=1e-4)
    expected_eq = max(norm.sf((mean + 0.1) / se), norm.sf((0.1 - mean) / se))
    assert test.p_equivalent == pytest.approx(expected_eq) and test.p_different == pytest.approx(norm.sf((mean - 0.1) / se))
    # zero disagreements are not certainty: 20 identical rows cannot show |Δ| < 0.02, 2,000 can
    few = metrics.equivalence_test([0] * 20, [0] * 20, margin=0.02)
    many = metrics.equivalence_test([0] * 2000, [0] * 2000, margin=0.02)
    assert few.p_equivalent > 0.05 and many.p_equivalent < 1e-6


def test_rows_for_equivalence_by_hand():
    # θ = 0: n = (z_.95 + z_.90)² · 2·0.02·0.98 / 0.02² = (1.6449 + 1.2816)² · 0.0392 / 0.0004 = 839.3 → 840
    assert metrics.rows_for_equivalence(0.02, 0.02, 0.02, power=0.8) == 840
    # θ = 0.03: var = .05·.98 + .02·.95 − .0009 = .0671; n = (1.6449 + 0.8416)² · .0671 / (.05 − .03)² = 1037.1 → 1038
    assert metrics.rows_for_equivalence(0.05, 0.05, 0.02, power=0.8) == 1038
    with pytest.raises(ValueError):
        metrics.rows_for_equivalence(0.02, 0.10, 0.02)
    # nothing expected to disagree: the pseudo-pairs' variance 2/(n+2) decides; n² ≥ 2·(z_.95 + z_.90)²/0.02²
    assert metrics.rows_for_equivalence(0.02, 0.0, 0.0) == math.ceil(math.sqrt(2 * (1.6449 + 1.2816) ** 2 / 0.0004))


def test_plan_cli_matches_the_hand_calculation(cli):
    result = cli("plan", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == 840
    assert cli("plan", "--disagreement", "0.2").exit_code == 2  # outside the margin: no sample size helps


def test_reasoning_effort_ignored_is_flagged():
    arms = [{"label": "lo", "backend": "api", "identity": {"x": 1}, "model": "m", "policy": "p", "reasoning_effort": "low"},
            {"label": "hi", "backend": "api", "identity": {"x": 1}, "model": "m", "policy": "p", "reasoning_effort": "high"}]
    flat = reasoning_effort_checks(arms, {"lo": {"reasoning_chars_mean": 400.0}, "hi": {"reasoning_chars_mean": 410.0}})
    assert flat[0]["flag"] == "reasoning_effort ignored"
    honest = reasoning_effort_checks(arms, {"lo": {"reasoning_chars_mean": 400.0}, "hi": {"reasoning_chars_mean": 1900.0}})
    assert honest[0]["flag"] is None


def test_study_enum_names_are_model_aliases():
    assert resolve_model("GPT_OSS_20B").model_id == "openai/gpt-oss-20b"
    assert resolve_model("GPT_OSS_safeguarded_20B").model_id == "openai/gpt-oss-safeguard-20b"
    assert resolve_model("GPT_OSS_SAFEGUARD_20B").name == "gpt-oss-safeguard-20b"


# -- runs ---------------------------------------------------------------------------------------------------------

def _compare(cli, *args):
    result = cli("compare", *args, "--json")
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def test_three_recorded_arms_a_copy_is_equivalent_and_the_pair_matches_rescore(cli, tmp_path):
    a = require_shared(RECORDED / "api_gpt-oss-20b_toxic_simple_n2000.parquet")
    b = require_shared(RECORDED / "api_gpt-oss-safeguard-20b_toxic_simple_n2000.parquet")
    copy = tmp_path / "copy-of-20b.parquet"
    shutil.copy(a, copy)
    arms = f"recorded[path={a};label=20b],recorded[path={b};label=safeguard],recorded[path={copy};label=copy]"
    result, s = _compare(cli, "--backends", arms, "--dataset", str(a), "--policy", "toxic_simple", "--model",
                         "GPT_OSS_20B", "--output-dir", str(tmp_path / "out"), "--no-margin")
    assert s is not None, result.output
    c = s["comparisons"]
    assert c["copy"]["binary_agreement"]["value"] == 1.0 and c["copy"]["equivalence"]["verdict"] == "equivalent"
    assert c["copy"]["content_identical"]["successes"] == 2000
    # the 20b-vs-safeguard pair equals the two-sided rescore of the same two study files
    two = json.loads(cli("rescore", str(a), str(b), "--no-write", "--json").stdout)
    for key in ("binary_agreement", "binary_agreement_both_parsed", "cohen_kappa", "causes"):
        assert c["safeguard"][key] == two[key], key
    # hand count from the study's own parse: rows where both study labels exist and are equal, or both missing
    fa, fb = pl.read_parquet(a), pl.read_parquet(b).select("conv_id", pl.col("raw_model_response").alias("other"))
    assert c["safeguard"]["binary_agreement"]["n"] == fa.join(fb, on="conv_id").height == 2000
    assert c["safeguard"]["equivalence"]["verdict"] == "different"  # 11 % disagreement against a 0 % floor
    pw = s["pairwise_agreement"]
    assert pw["labels"] == ["20b", "safeguard", "copy"] and pw["cells"][0][2]["value"] == 1.0
    assert pw["cells"][0][1]["successes"] == two["binary_agreement"]["successes"] < 2000  # the real 20b–safeguard cell
    assert pw["cells"][1][2] == pw["cells"][0][1]  # the copy agrees with safeguard exactly as 20b does
    assert s["fleiss_kappa"]["arms"] == 3 and s["fleiss_kappa"]["value"] is not None
    assert s["verdict"] == "fail" and "safeguard: fail" in s["verdict_reason"]
    frame = pl.read_parquet(Path(s["run_dir"]) / "results.parquet")
    assert frame.height == 3 * 2000 and set(frame["arm"]) == {"20b", "safeguard", "copy"}  # tidy: example × arm
    pairs = pl.read_parquet(Path(s["run_dir"]) / "pairs.parquet")
    assert pairs.height == 2 * 2000 and set(pairs["arm"]) == {"safeguard", "copy"} and set(pairs["reference"]) == {"20b"}


def test_repeats_measure_the_noise_floor_and_reference_picks_the_yardstick(cli, tmp_path):
    arms = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    result, s = _compare(cli, "--backends", arms, "--dataset", str(N50), "--policy", "toxic_chat_claude_1",
                         "--repeats", "2", "--reference", "local-gpu", "--output-dir", str(tmp_path / "out"))
    assert s is not None, result.output
    assert s["reference"] == "local-gpu" and list(s["comparisons"]) == ["provider"]
    assert s["noise_floor"] == {"local-gpu": s["noise_floor"]["local-gpu"], "provider": s["noise_floor"]["provider"]}
    assert s["noise_floor"]["local-gpu"]["value"] == 1.0 and s["noise_floor"]["local-gpu"]["n"] == 50  # a recording repeats itself
    eq = s["comparisons"]["provider"]["equivalence"]
    assert eq["floor_measured"] and eq["floor_disagreement"] == 0.0 and eq["disagreement"] == pytest.approx(2 / 50)
    tidy = pl.read_parquet(Path(s["run_dir"]) / "results.parquet")
    assert tidy.height == 2 * 2 * 50 and sorted(set(tidy["repeat"])) == [0, 1]


def test_an_old_two_sided_run_dir_still_rescores(cli, tmp_path):
    arms = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    _, s = _compare(cli, "--backends", arms, "--dataset", str(N50), "--policy", "toxic_chat_claude_1",
                    "--output-dir", str(tmp_path / "out"))
    run_dir = Path(s["run_dir"])
    old = tmp_path / "old-run"
    old.mkdir()
    meta = pl.read_parquet_metadata(run_dir / "pairs.parquet")
    meta_two_sided = json.loads(meta["toxcmp"])
    meta_two_sided.pop("arms")  # as written before arms existed
    pl.read_parquet(run_dir / "pairs.parquet").drop("arm", "reference").write_parquet(
        old / "results.parquet", metadata={"toxcmp": json.dumps(meta_two_sided)})
    again = json.loads(cli("rescore", str(old), "--no-write", "--json").stdout)
    for key in ("binary_agreement", "cohen_kappa", "causes", "verdict"):
        assert again[key] == s[key], key


ROWS = 4  # of the shipped 24: enough for every statistic here (each is checked against ROWS itself)


@pytest.mark.slow
def test_three_live_arms_with_repeats_on_the_shipped_rows(cli, tmp_path):
    """local as reference, api through a spawned transformers serve, and a second local configuration; 8 of the
    shipped rows, two repeats each: the floor per arm, the pairwise matrix and the equivalence verdicts."""
    arms = "local,api[label=served],local[strategy=naive;label=naive]"
    result, s = _compare(cli, "--backends", arms, "--dataset", str(SAMPLE), "--sample-size", str(ROWS), "--repeats",
                         "2", "--max-new-tokens", "8", "--output-dir", str(tmp_path / "out"), "--no-margin")
    assert s is not None, result.output
    assert set(s["noise_floor"]) == {"local", "served", "naive"}
    assert all(f["n"] == ROWS and f["value"] == 1.0 for f in s["noise_floor"].values())  # greedy repeats itself
    assert len(s["pairwise_agreement"]["cells"]) == 3
    assert s["comparisons"]["naive"]["content_identical"]["successes"] == ROWS  # same engine, another strategy
    # SmolLM2 gives no labels, so label equivalence cannot be judged: inconclusive, said so, never PASS
    assert all(c["equivalence"]["verdict"] == "inconclusive" for c in s["comparisons"].values())
    assert s["verdict"] == "inconclusive" and result.exit_code == 3
    calls = s["metadata"]["throughput"]
    assert calls["served"]["calls"] == 2 * ROWS and calls["naive"]["calls"] == 2 * ROWS  # every arm and repeat ran


def test_a_definite_failure_is_not_hidden_behind_an_inconclusive_arm():
    from toxcmp.analysis.arms import VERDICT_ORDER

    assert min(("inconclusive", "fail", "pass"), key=VERDICT_ORDER.index) == "fail"


def test_two_study_files_of_the_same_model_stay_two_arms(cli, tmp_path):
    a = require_shared(RECORDED / "api_gpt-oss-20b_toxic_simple_n2000.parquet")
    other = tmp_path / "api_gpt-oss-20b_provider-b.parquet"
    shutil.copy(a, other)
    result = cli("rescore", str(a), str(other), "--no-write", "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert len(s["arms"]) == 2 and s["binary_agreement"]["value"] == 1.0


def test_rescore_keeps_the_local_model_margins(cli, tmp_path):
    arms = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    _, s = _compare(cli, "--backends", arms, "--dataset", str(N50), "--policy", "toxic_chat_claude_1",
                    "--output-dir", str(tmp_path / "out"))
    run_dir = Path(s["run_dir"])
    pairs = pl.read_parquet(run_dir / "pairs.parquet")
    flip = pairs["cause"].to_list().index("label_flip")
    marked = pairs.with_columns(  # as if the local model had scored the flip
        pl.when(pl.arange(0, pairs.height) == flip).then(pl.lit(-0.25)).otherwise(None).alias("margin_nats"),
        pl.when(pl.arange(0, pairs.height) == flip).then(pl.lit("near_tie")).otherwise(None).alias("margin_kind"))
    marked.write_parquet(run_dir / "pairs.parquet")
    again = json.loads(cli("rescore", str(run_dir), "--no-write", "--json").stdout)
    assert again["margins"] == {"scored": 1, "near_tie": 1, "true_disagreement": 0}
