"""`compare --config run.toml`: a run as a file (issue 23); the command line wins; bad files are one line."""

from __future__ import annotations

import json


N50 = "configs/recordings/backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _toml(tmp_path, extra="", name="run.toml"):
    from pathlib import Path

    n50 = Path(__file__).resolve().parents[2] / N50
    return _write(tmp_path / name, f'''
backends = ["recorded[path={n50};side=api;label=provider]", "recorded[path={n50};side=local;label=gpu]"]
dataset = "{n50}"
policy = "toxic_chat_claude_1"
model = "gpt-oss-safeguard-20b"
output-dir = "{tmp_path / "out"}"
cache_dir = "{tmp_path / "cache"}"
{extra}''')


def test_a_run_from_a_file_is_the_run_the_flags_would_give(cli, tmp_path):
    result = cli("compare", "--config", str(_toml(tmp_path)), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [a["label"] for a in summary["arms"]] == ["provider", "gpu"] and summary["n"] == 50
    assert summary["metadata"]["policy"]["name"] == "toxic_chat_claude_1"


def test_the_command_line_wins_over_the_file(cli, tmp_path):
    result = cli("compare", "--config", str(_toml(tmp_path, "threshold = 0.5")), "--threshold", "0.99", "--json")
    summary = json.loads(result.stdout)
    assert summary["threshold"] == 0.99 or summary["metadata"].get("threshold") == 0.99, summary.keys()


def test_bad_files_are_one_line_exit_2(cli, tmp_path):
    cases = [(_toml(tmp_path, "sample_sise = 3", "typo.toml"), "unknown key 'sample_sise' for `compare`"),
             (_write(tmp_path / "bad.toml", "backends = [\n"), "is not valid TOML"),
             (tmp_path / "missing.toml", "cannot read --config"),
             (_toml(tmp_path, "token = 'hf_abcdefgh12345678'", "secret.toml"), "token is never read from a file")]
    for path, message in cases:
        result = cli("compare", "--config", str(path))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], (path, result.stderr)
        assert "hf_abcdefgh12345678" not in result.stderr
