"""`toxcmp runs` lists run dirs newest first from their summary.json files (hand-written here)."""

from __future__ import annotations

import json
from pathlib import Path


def _run(root, name, finished, verdict, n, planned, status="complete"):
    d = root / name
    d.mkdir(parents=True)
    summary = {"verdict": verdict, "status": status, "n": n, "arms": [{"label": "api"}, {"label": "local"}],
               "metadata": {"run_id": name, "finished_at": finished, "model": {"name": "gpt-oss-20b"},
                            "policy": {"name": "toxic_simple"}, "dataset": {"sampled": planned}}}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_runs_newest_first_with_verdict_rows_and_arms(cli, tmp_path):
    _run(tmp_path, "older", "2026-11-30T10:00:00+00:00", "pass", 200, 200)
    _run(tmp_path, "newer", "2026-12-01T09:00:00+00:00", "incomplete", 48, 200, status="interrupted")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text("{not json")
    (tmp_path / "cache").mkdir()  # no summary: not a run
    listed = json.loads(cli("runs", "--output-dir", str(tmp_path), "--json").stdout)
    assert [r["run_id"] for r in listed] == ["newer", "older", "broken"]
    assert listed[0]["n"] == 48 and listed[0]["planned"] == 200 and listed[0]["status"] == "interrupted"
    assert listed[1]["arms"] == ["api", "local"] and listed[1]["verdict"] == "pass"
    assert listed[2]["problem"] == "summary.json unreadable: JSONDecodeError"
    shown = cli("runs", "--output-dir", str(tmp_path))
    assert shown.exit_code == 0 and "48 of 200" in shown.stdout and "incomplete (interrupted)" in shown.stdout


def test_no_runs_is_one_line_and_exit_0(cli, tmp_path):
    result = cli("runs", "--output-dir", str(tmp_path / "nothing"))
    assert result.exit_code == 0 and "no runs under" in result.stdout


def test_view_without_a_run_dir_opens_the_newest(cli, tmp_path):
    from toxcmp.results.runs import latest_run

    n50 = Path(__file__).resolve().parents[2] / "configs" / "recordings" / (
        "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet")
    for label in ("first", "second"):
        arms = f"recorded[path={n50};side=api;label={label}],recorded[path={n50};side=local]"
        done = cli("compare", "--backends", arms, "--dataset", str(n50), "--policy", "toxic_chat_claude_1",
                   "--model", "gpt-oss-safeguard-20b", "--output-dir", str(tmp_path), "--cache-dir",
                   str(tmp_path / "cache"), "--json", "--quiet")
        assert done.exit_code in (0, 1), done.output
        newest = Path(json.loads(done.stdout)["run_dir"])
    assert latest_run(tmp_path) == newest
    shown = cli("view", "--output-dir", str(tmp_path), "--no-open")
    assert shown.exit_code == 0 and shown.stdout.strip() == str(newest / "report.html")
    empty = cli("view", "--output-dir", str(tmp_path / "none"), "--no-open")
    assert empty.exit_code == 2 and "no runs under" in empty.stderr
