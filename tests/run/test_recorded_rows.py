"""Issue 23: when every arm replays a recording and no dataset is named, the run takes the rows every recording
holds (not the whole bundled split with every other row an error), and says so in one line.

The expected rows are counted with polars from the recording and the bundled split themselves (a row is held
when its conv_id, or its text, is in the recording)."""

from __future__ import annotations

import json

import polars as pl

from toxcmp.config import configs_dir
from toxcmp.domain.data import bundled_test_split

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


def _held_rows() -> int:
    recording = pl.read_parquet(N50)
    split = pl.read_parquet(bundled_test_split()).unique(subset="conv_id", keep="first")
    held = split.filter(pl.col("conv_id").is_in(recording["conv_id"].to_list())
                        | pl.col("user_input").is_in(recording["text"].to_list()))
    return held.height


def test_recorded_arms_without_a_dataset_run_the_rows_the_recordings_hold(cli, tmp_path):
    backends = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    result = cli("compare", "--backends", backends, "--model", "gpt-oss-safeguard-20b", "--policy",
                 "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"), "--json")
    summary = json.loads(result.stdout)
    expected = _held_rows()
    assert 0 < expected <= 50
    assert summary["n"] == expected and not summary.get("n_errors"), {k: summary.get(k) for k in ("n", "n_errors")}
    assert summary["verdict"] != "incomplete"
    said = cli("compare", "--backends", backends, "--model", "gpt-oss-safeguard-20b", "--policy",
               "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"))
    assert f"the run takes the {expected} rows of" in said.output and "that every recording holds" in said.output


def test_a_named_dataset_is_run_as_named(cli, tmp_path):
    data = tmp_path / "rows.csv"
    pl.read_parquet(N50).head(10).select("conv_id", pl.col("text").alias("user_input"),
                                         pl.col("ground_truth").alias("toxicity")).write_csv(data)
    backends = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    result = cli("compare", "--backends", backends, "--dataset", str(data), "--model", "gpt-oss-safeguard-20b",
                 "--policy", "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"), "--json")
    assert json.loads(result.stdout)["n"] == 10
