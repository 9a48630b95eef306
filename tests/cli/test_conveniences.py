"""Issue 23, command-line conveniences: unlabelled rows through a whole run, --text-column/--label-column,
--limit, --temperature/--top-p (in the cache key and the run id), one-line errors for bad values and unusable
devices (checked before any data, model or server), a declined `cache clear` exits 0, and `rescore` takes the
output options `compare` takes.

Real runs: `compare` over the shipped recording (no model), `classify` against the scripted loopback server.
Expected values come from the input files (polars over them) and hand counts, never from toxcmp's output."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import polars as pl
import pytest

from toxcmp.config import configs_dir

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
RECORDED = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
RUN = ("--backends", RECORDED, "--model", "gpt-oss-safeguard-20b", "--policy", "toxic_chat_claude_1")


def _study_as_dataset(path: Path, unlabelled: int = 0, text: str = "user_input", label: str = "toxicity") -> Path:
    """The recording's own rows as a dataset file, the first `unlabelled` labels left empty."""
    frame = pl.read_parquet(N50).with_row_index("i")
    frame = frame.select("conv_id", pl.col("text").alias(text),
                         pl.when(pl.col("i") < unlabelled).then(None).otherwise(pl.col("ground_truth")).alias(label))
    frame.write_csv(path)
    return path


def _compare(cli, tmp_path, *args):
    result = cli("compare", *RUN, "--output-dir", str(tmp_path / "out"), "--json", *args)
    assert result.exit_code in (0, 1, 3), result.output
    return json.loads(result.stdout)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output and "╭" not in result.output, result.output
    return lines[0]


# -- 1. unlabelled rows through a whole run -----------------------------------------------------------------------

def test_a_run_over_partly_unlabelled_rows_scores_accuracy_on_the_labelled_ones(cli, tmp_path):
    dataset = _study_as_dataset(tmp_path / "part.csv", unlabelled=10)
    summary = _compare(cli, tmp_path, "--dataset", str(dataset))
    study = pl.read_parquet(N50).with_row_index("i").filter(pl.col("i") >= 10)  # the 40 labelled rows
    assert summary["metadata"]["dataset"]["labelled"] == 40 == study.height
    for side, column in (("a", "api_binary_label"), ("b", "local_binary_label")):
        accuracy = summary["backends"][side]["accuracy"]
        right = int((study[column].cast(pl.Int64) == study["ground_truth"]).sum())  # the study's own labels
        assert (accuracy["n"], accuracy["successes"]) == (40, right)
    assert summary["binary_agreement"]["n"] == 50  # agreement between the arms needs no human label
    results = pl.read_parquet(Path(summary["run_dir"]) / "results.parquet")
    first_ten = pl.read_parquet(N50)["conv_id"].head(10).to_list()
    assert results.filter(pl.col("example_id").is_in(first_ten))["toxicity"].null_count() == 20  # 10 rows × 2 arms


def test_stratify_without_labels_is_one_line_before_any_model(cli, tmp_path):
    dataset = _study_as_dataset(tmp_path / "part.csv", unlabelled=10)
    result = cli("compare", *RUN, "--dataset", str(dataset), "-n", "10", "--stratify", "--output-dir", str(tmp_path))
    assert result.exit_code == 2 and "10 of 50 rows" in _one_error_line(result)
    result = cli("compare", *RUN, "--dataset", str(dataset), "--label-column", "none", "-n", "10", "--stratify")
    assert result.exit_code == 2 and "--label-column none" in _one_error_line(result)


# -- 2. --text-column / --label-column ------------------------------------------------------------------------

def test_named_columns_read_the_same_rows_as_the_standard_ones(cli, tmp_path):
    standard = _compare(cli, tmp_path, "--dataset", str(_study_as_dataset(tmp_path / "std.csv")))
    custom = _study_as_dataset(tmp_path / "custom.csv", text="prompt", label="label")
    result = cli("compare", *RUN, "--dataset", str(custom), "--output-dir", str(tmp_path / "out"))
    line = _one_error_line(result)
    assert result.exit_code == 2 and "--text-column" in line and "--label-column label" in line
    mapped = _compare(cli, tmp_path, "--dataset", str(custom), "--text-column", "prompt", "--label-column", "label")
    assert mapped["metadata"]["dataset"]["content_sha256"] == standard["metadata"]["dataset"]["content_sha256"]
    assert mapped["backends"]["a"]["accuracy"] == standard["backends"]["a"]["accuracy"]


# -- 4. --limit -----------------------------------------------------------------------------------------------------

def test_limit_runs_the_first_rows_and_is_part_of_the_run_id(cli, tmp_path):
    dataset = _study_as_dataset(tmp_path / "d.csv")
    seven = _compare(cli, tmp_path, "--dataset", str(dataset), "--limit", "7")
    eight = _compare(cli, tmp_path, "--dataset", str(dataset), "--limit", "8")
    rows = pl.read_parquet(Path(seven["run_dir"]) / "results.parquet").filter(pl.col("repeat") == 0)
    first = pl.read_csv(dataset)["conv_id"].head(7).to_list()
    for arm in rows["arm"].unique().to_list():
        assert rows.filter(pl.col("arm") == arm)["example_id"].to_list() == first
    assert seven["metadata"]["dataset"]["strategy"] == "first"
    assert seven["run_dir"] != eight["run_dir"]
    result = cli("compare", *RUN, "--dataset", str(dataset), "--limit", "7", "-n", "7")
    assert result.exit_code == 2 and "--limit" in _one_error_line(result)


# -- 5. --temperature / --top-p -----------------------------------------------------------------------------------

def test_temperature_and_top_p_reach_the_request_the_cache_key_and_the_run_id(cli, tmp_path):
    from toxcmp.testing.fake_server import FakeChatServer

    common = ("--backend", "api", "--model", "someone/model", "--policy", "toxic_simple", "--json")
    with FakeChatServer(models=["someone/model"]) as server:
        base = ("--base-url", server.base_url)
        hot = cli("classify", "hello", *common, *base, "--temperature", "0.7", "--top-p", "0.9")
        cold = cli("classify", "hello", *common, *base)
        again = cli("classify", "hello", *common, *base, "--temperature", "0.7", "--top-p", "0.9")
        sent = [r for r in server.requests if "messages" in r]
    assert hot.exit_code == cold.exit_code == again.exit_code == 0, (hot.output, cold.output)
    assert (sent[0]["temperature"], sent[0]["top_p"]) == (0.7, 0.9)
    assert sent[1]["temperature"] == 0.0 and len(sent) == 2  # the third answered from the cache
    assert [json.loads(r.stdout)["cached"] for r in (hot, cold, again)] == [False, False, True]
    assert json.loads(cli("cache", "info", "--json").stdout)["entries"] == 2  # two temperatures, two keys
    dataset = str(_study_as_dataset(tmp_path / "d.csv"))
    runs = {_compare(cli, tmp_path, "--dataset", dataset, *extra)["run_dir"]
            for extra in ((), ("--temperature", "0.5"), ("--top-p", "0.5"))}
    assert len(runs) == 3


# -- 6. one line for a bad value; exit codes; the same output options ---------------------------------------------

@pytest.mark.parametrize("args, said", [
    (("--max-new-tokens", "0"), "--max-new-tokens must be positive"),
    (("--temperature", "-1"), "--temperature"),
    (("--top-p", "0"), "--top-p"),
    (("--limit", "0"), "--limit must be positive"),
])
def test_a_bad_value_is_one_line_exit_2(cli, tmp_path, args, said):
    result = cli("compare", *RUN, "--dataset", str(tmp_path / "absent.csv"), *args)
    assert result.exit_code == 2 and said in _one_error_line(result)
    if args[0] in ("--max-new-tokens", "--temperature"):
        result = cli("classify", "hi", "--backend", "local", *args)
        assert result.exit_code == 2 and said in _one_error_line(result)


def test_declining_cache_clear_exits_0_and_keeps_everything(isolated_env):
    from tests.cli.test_cache_cli import _fill, _run_in_terminal
    from toxcmp.run.cache import ResponseCache

    _fill(isolated_env)
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(isolated_env), COLUMNS="120")
    code, out = _run_in_terminal(["cache", "clear"], b"n\n", env)
    assert "delete 3 cached response(s)" in out and code == 0, out  # README: 1 is "below threshold"
    assert "nothing removed" in out and "Aborted" not in out
    cache = ResponseCache(isolated_env)
    assert len(cache) == 3
    cache.close()


def test_rescore_takes_the_output_options_compare_takes(cli, tmp_path):
    import typer.main

    from toxcmp.cli.app import app

    commands = typer.main.get_command(app).commands
    options = {name: {o for p in commands[name].params for o in p.opts} for name in ("compare", "rescore")}
    for flag in ("--quiet", "-q", "--json", "--output-dir", "--run-id"):
        assert flag in options["compare"] and flag in options["rescore"], flag
    loud = cli("rescore", str(N50), "--no-write")
    quiet = cli("rescore", str(N50), "--no-write", "--quiet")
    assert quiet.exit_code == loud.exit_code == 0, quiet.output
    assert "PASS" in quiet.stdout


# -- 7. devices and local options, checked up front and blamed on the option -----------------------------------------

def test_an_unusable_cuda_device_is_one_line_before_data_model_or_server(cli, tmp_path):
    import torch

    device = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU; cuda:0 on a CPU-only torch
    absent = tmp_path / "absent.csv"  # were the data read first, this would say "dataset file not found"
    started = time.monotonic()
    result = cli("compare", "--dataset", str(absent), "--device", device, "--output-dir", str(tmp_path))
    line = _one_error_line(result)
    assert result.exit_code == 2 and f"--device {device}" in line and "not found" not in line, line
    assert time.monotonic() - started < 30  # no server started, no model loaded
    written = cli("compare", "--dataset", str(absent), "--backends", f"api,local[device={device}]")
    assert written.exit_code == 2 and f"device={device} in 'local[device={device}]'" in _one_error_line(written)
    one = cli("classify", "hi", "--backend", "local", "--device", device)
    assert one.exit_code == 2 and f"--device {device}" in _one_error_line(one)


@pytest.mark.parametrize("flag, value, said", [
    ("--dtype", "fp17", "unknown dtype 'fp17'"),
    ("--strategy", "fastest", "unknown strategy 'fastest'"),
    ("--batch-size", "many", "--batch-size must be 'auto' or a positive integer"),
])
def test_a_bad_local_option_is_blamed_on_the_option_not_an_arm(cli, tmp_path, flag, value, said):
    absent = str(tmp_path / "absent.csv")
    result = cli("compare", "--dataset", absent, "--backends", "api,local[strategy=naive],local", flag, value)
    line = _one_error_line(result)
    assert result.exit_code == 2 and said in line and " in '" not in line, line  # no arm did anything wrong
    key = flag.removeprefix("--").replace("-", "_")
    spec = f"local[{key}={value}]"
    written = cli("compare", "--dataset", absent, "--backends", f"api,{spec}")
    assert written.exit_code == 2 and f"in '{spec}'" in _one_error_line(written)  # this arm did
