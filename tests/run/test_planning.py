"""Issue 23: a run's plan before it starts — requests per arm, what the cache holds, an estimate from the speed this
arm configuration last ran at on this machine — and, in a terminal, a question before a long run (`--yes` skips; no is exit 130, never a pass).

The arithmetic is checked against hand counts; the speeds against a loopback server whose per-request delay is
known; the prompt in a real pseudo-terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from tests.helpers.terminal import run_in_terminal
from toxcmp.run.planning import SPEEDS_FILE, ArmWork, PlannedWork
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion


def test_lanes_add_up_within_and_overlap_across():
    arms = (ArmWork("local", 10, 4, 2.0), ArmWork("api", 10, 0, 0.5), ArmWork("llamacpp", 10, 10, None))
    # local and llamacpp take turns on this machine (6 × 2 s + nothing to send); api runs beside them (10 × 0.5 s)
    work = PlannedWork(10, arms, ((0, 2), (1,)))
    assert work.estimate_s == pytest.approx(12.0) and work.unmeasured_requests == 0 and not work.is_long
    unknown = PlannedWork(300, (ArmWork("api", 300, 50, None),), ((0,),))
    assert unknown.estimate_s is None and unknown.unmeasured_requests == 250 and unknown.is_long
    long = PlannedWork(700, (ArmWork("local", 700, 0, 1.0),), ((0,),))
    assert long.estimate_s == pytest.approx(700.0) and long.is_long


def _dataset(path, n: int):
    pl.DataFrame({"conv_id": [f"c{i}" for i in range(n)], "user_input": [f"message number {i}" for i in range(n)],
                  "toxicity": [i % 2 for i in range(n)]}).write_csv(path)
    return path


def _env(tmp_path):
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}


def _args(server, tmp_path, data, *extra):
    return ["compare", "--backends", "api", "--model", "org/m", "--base-url", server.base_url, "--dataset",
            str(data), "--concurrency", "1", "--output-dir", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), *extra]


def _compare(args, tmp_path):
    return subprocess.run([sys.executable, "-m", "toxcmp", *args, "--quiet"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def test_a_run_measures_its_speed_and_the_next_plan_estimates_from_it(tmp_path):
    data = _dataset(tmp_path / "rows.csv", 12)
    delay = 0.25
    with FakeChatServer(models=["org/m"], default=Reply(body=completion("0")), delay_s=delay) as server:
        first = subprocess.run([sys.executable, "-m", "toxcmp", *_args(server, tmp_path, data, "--limit", "6")],
                               env=_env(tmp_path), capture_output=True, text=True, timeout=300)
        speeds = json.loads((tmp_path / "cache" / SPEEDS_FILE).read_text())
        second = subprocess.run([sys.executable, "-m", "toxcmp", *_args(server, tmp_path, data)],
                                env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert first.returncode in (0, 1, 3), first.stderr
    assert "plan: 6 rows × 1 arm; time unknown: 6 requests" in first.stderr, first.stderr
    (entry,) = speeds.values()
    assert entry["calls"] == 6 and delay <= entry["seconds_per_request"] < delay + 0.5, entry
    line = next(line for line in second.stderr.splitlines() if line.startswith("  api:"))
    assert "12 requests, 6 in the cache, 6 to send" in line, line
    assert f"({entry['seconds_per_request']:.2f} s of run time per request over 6 requests)" in line, line


def test_a_terminal_is_asked_before_a_long_run_and_no_stops_it_before_anything_is_sent(tmp_path):
    data = _dataset(tmp_path / "rows.csv", 240)
    with FakeChatServer(models=["org/m"], default=Reply(body=completion("0"))) as server:
        code, out = run_in_terminal(_args(server, tmp_path, data), _env(tmp_path), answers={b"[y/N]": b"n\r"})
        sent = [r for r in server.requests if "messages" in r]
    assert "240 requests, 0 in the cache, 240 to send; speed not measured yet" in out, out
    assert "start it? [y/N]" in out and "declined: nothing ran" in out, out
    assert code == 130 and sent == [] and not (tmp_path / "out").exists()  # never 0, which is a pass


def test_yes_and_a_pipe_start_without_asking(tmp_path):
    data = _dataset(tmp_path / "rows.csv", 240)
    with FakeChatServer(models=["org/m"], default=Reply(body=completion("0"))) as server:
        code, out = run_in_terminal(_args(server, tmp_path, data, "--yes", "--quiet"), _env(tmp_path))
        asked = "[y/N]" in out
        piped = _compare(_args(server, tmp_path, data, "--max-new-tokens", "32"), tmp_path)
    assert not asked and code in (0, 1, 3), out
    assert piped.returncode in (0, 1, 3) and "[y/N]" not in piped.stderr, piped.stderr
