"""Every arm really runs, and a run's prompts can be shown again (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.backends import BackendConfig
from toxcmp.config import configs_dir

SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"


def test_local_cache_identity_covers_strategy_dtype_device_and_batch_size():
    from toxcmp.backends.local import LocalBackend

    base = LocalBackend(BackendConfig(device="cpu")).endpoint
    for change in ({"strategy": "naive"}, {"dtype": "float32"}, {"batch_size": "4"}):
        assert LocalBackend(BackendConfig(device="cpu", **change)).endpoint != base, change


def test_run_id_changes_with_every_result_changing_option(cli, tmp_path):
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.run.arms import arm_identity, build_arm, default_run_id
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.specs import parse_backend_spec

    spec, policy = resolve_model("smollm2-135m"), load_policy("toxic_simple")
    meta = {"content_sha256": "x"}

    def run_id(cfg, settings):
        specs = [parse_backend_spec("local")]
        return default_run_id(cfg, spec, policy, meta, specs, [build_arm(specs[0], cfg, settings)[0]])

    base = BackendConfig()
    ids = {run_id(CompareConfig(), base)}
    for config in ({"dtype": "bfloat16"}, {"device": "cpu"}, {"strategy": "naive"}):
        ids.add(run_id(CompareConfig(), BackendConfig(**config)))
    for cfg in (CompareConfig(unparsed_as="0"), CompareConfig(threshold=0.9), CompareConfig(min_labelled=0.2)):
        ids.add(run_id(cfg, base))
    assert len(ids) == 7
    arm = build_arm(parse_backend_spec("api[base_url=http://127.0.0.1:9]"), CompareConfig(), BackendConfig(token="hf_secret"))[0]
    assert "hf_secret" not in json.dumps(arm_identity("api", arm.options)) and "token" not in arm.describe()["identity"]


@pytest.mark.slow
def test_two_local_strategies_both_run_and_the_run_renders_its_prompts(cli, tmp_path):
    args = ["compare", "--backends", "local[strategy=naive],local", "--dataset", str(SAMPLE), "--sample-size", "2",
            "--max-new-tokens", "8", "--output-dir", str(tmp_path / "out"), "--json"]
    s = json.loads(cli(*args).stdout)
    calls = {label: t["calls"] for label, t in s["metadata"]["throughput"].items()}
    assert calls == {"local[strategy=naive]": 2, "local": 2}  # side B did not answer from side A's entries
    assert s["content_identical"]["successes"] == 2  # and the two strategies agree token for token
    run_dir = Path(s["run_dir"])
    row = pl.read_parquet(run_dir / "pairs.parquet").row(0, named=True)
    by_id = json.loads(cli("render", "--run", str(run_dir), "--example", row["example_id"], "--json").stdout)
    assert by_id["prompt_hash"] == row["a_prompt_hash"] and row["text"] in by_id["local_prompt"]
    by_hash = json.loads(cli("render", "--run", str(run_dir), "--prompt-hash", row["a_prompt_hash"][:10], "--json").stdout)
    assert by_hash["prompt_hash"] == row["a_prompt_hash"]
    assert by_hash["api_request"]["max_tokens"] == 8  # the run's settings, not render's defaults
    missing = cli("render", "--run", str(run_dir), "--example", "nope")
    assert missing.exit_code == 2 and "no example 'nope'" in missing.output
