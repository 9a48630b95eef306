"""Issue 23: the console report reads at 80 columns — the conformance table turns arms into columns and facts into
rows there, so no arm name or fact is cut into three-letter pieces — and a recorded arm's missing usage is the
recording's, not blamed on a server's streaming.

Real `compare` runs of three recorded arms over the shipped recording (no model), rendered by the CLI (a process of its
own, as a user runs it) at 80 and 200 columns."""

from __future__ import annotations

import subprocess
import sys

from toxcmp.config import configs_dir

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
ARMS = f"recorded[path={N50};side=api],recorded[path={N50};side=local],recorded[path={N50};side=api;label=again]"


def _report(tmp_path, columns: int) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "COLUMNS": str(columns)}
    done = subprocess.run([sys.executable, "-m", "toxcmp", "compare", "--backends", ARMS, "--dataset", str(N50),
                           "--model", "gpt-oss-safeguard-20b", "--policy", "toxic_chat_claude_1", "--output-dir",
                           str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1, 3), done.stderr
    return done.stdout


def _conformance(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("conformance, ranked"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("└"))
    return lines[start:end + 1]


def test_at_80_columns_arms_are_columns_and_every_name_is_whole(tmp_path):
    table = _conformance(_report(tmp_path, 80))
    assert all(len(line) <= 80 for line in table), table
    header = " ".join(table[1:5])
    for arm in ("again", "recorded:local", "recorded:api"):
        assert arm in header, header
    facts = [line.split("│")[1].strip() for line in table if line.startswith("│")]
    for fact in ("standing", "noise floor", "equivalence", "reasoning from", "cut off", "no final answer"):
        assert fact in facts, facts


def test_a_wide_terminal_keeps_one_row_per_arm(tmp_path):
    table = _conformance(_report(tmp_path, 200))
    rows = [line for line in table if line.startswith("│")]
    assert len(rows) == 3 and [r.split("│")[2].strip() for r in rows] == ["again", "recorded:local", "recorded:api"]


def test_a_recorded_arm_without_usage_is_not_told_about_streaming(tmp_path):
    text = _report(tmp_path, 200)
    lines = [line for line in text.splitlines() if line.startswith("prompt tokens, ")]
    assert len(lines) == 3, text
    assert all("the recording holds no usage" in line and "stream" not in line for line in lines), lines


def test_nothing_in_the_80_column_report_is_cut_with_an_ellipsis(tmp_path):
    import re

    cut = [line for line in _report(tmp_path, 80).splitlines() if re.search(r"\w…\s*│", line)]
    assert cut == [], cut  # e.g. "served by" once showed backend_comparison_gpt-…
