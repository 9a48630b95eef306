"""Issue 23, quiet where it should be: in a terminal, a run's notes are plain lines (no time stamp, no
`live.py:311` source location); off a terminal, no progress bars of transformers ("Loading weights") or the Hub.

Real processes: the live view in a pseudo-terminal over the shipped recording; the local backend loading the
bundled SmolLM2 with its stderr going to a pipe, as a log would."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.terminal import run_in_terminal
from toxcmp.config import configs_dir

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


def test_notes_in_the_live_view_carry_no_source_location(tmp_path):
    backends = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code, out = run_in_terminal(["compare", "--backends", backends, "--model", "gpt-oss-safeguard-20b", "--policy",
                                 "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"), "--cache-dir",
                                 str(tmp_path / "cache")], env)
    assert code in (0, 1, 3), out
    note = next(line for line in out.splitlines() if "every arm is recorded" in line)
    assert not re.search(r"\w+\.py:\d+", note) and not re.match(r"\s*\[\d\d:\d\d:\d\d\]", note), note
    assert not re.search(r"\blive\.py:\d+", out), out


@pytest.mark.slow
def test_loading_the_local_model_prints_no_progress_bar_into_a_log(tmp_path, models_dir):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "TOXCMP_MODELS_DIR": str(models_dir)}
    done = subprocess.run([sys.executable, "-m", "toxcmp", "classify", "hello there", "--backend", "local",
                           "--no-cache", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "it/s]" not in done.stderr, done.stderr


def test_rows_without_a_human_label_show_a_dash_not_none_in_the_live_view(tmp_path):
    import polars as pl

    data = tmp_path / "unlabelled.csv"
    pl.read_parquet(N50).select("conv_id", pl.col("text").alias("user_input"),
                                pl.lit(None, dtype=pl.Int8).alias("toxicity")).write_csv(data)
    backends = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code, out = run_in_terminal(["compare", "--backends", backends, "--model", "gpt-oss-safeguard-20b", "--policy",
                                 "toxic_chat_claude_1", "--dataset", str(data), "--output-dir", str(tmp_path / "out"),
                                 "--cache-dir", str(tmp_path / "cache")], env, columns=160)
    assert "latest examples" in out, out
    assert "None" not in out, out
