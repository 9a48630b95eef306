"""`rescore` writes next to what it rescored, not under the current directory (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

from toxcmp.config import configs_dir

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


def test_rescore_goes_next_to_its_source(cli, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    both = f"recorded[path={N50};side=api],recorded[path={N50};side=local]"
    first = json.loads(cli("compare", "--backends", both, "--dataset", str(N50), "--policy", "toxic_chat_claude_1",
                           "--output-dir", str(runs), "--json").stdout)
    run_dir = Path(first["run_dir"])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = json.loads(cli("rescore", str(run_dir), "--json").stdout)
    assert Path(again["run_dir"]).parent == runs and Path(again["run_dir"]).name == run_dir.name + "-rescored"
    by_file = json.loads(cli("rescore", str(run_dir / "results.parquet"), "--json", "--run-id", "by-file").stdout)
    assert Path(by_file["run_dir"]) == runs / "by-file"
    assert not any(elsewhere.iterdir())  # nothing under the current directory
    told = json.loads(cli("rescore", str(run_dir), "--output-dir", str(tmp_path / "told"), "--json").stdout)
    assert Path(told["run_dir"]).parent == tmp_path / "told"
