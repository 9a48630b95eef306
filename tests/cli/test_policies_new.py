"""`toxcmp policies new NAME` (issue 23): a commented template that loads, renders and compares as written, and
never overwrites; policy files written the guide's way work from the command line; bad ones are one line."""

from __future__ import annotations

import json

import pytest

from toxcmp.domain.policies import load_policy

from tests.conftest import RECORDED, require_shared

N50 = RECORDED / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_new_writes_a_commented_template_that_loads_as_written(cli, in_tmp):
    result = cli("policies", "new", "mine")
    assert result.exit_code == 0, result.output
    assert "--policy ./mine.md" in result.stdout
    written = (in_tmp / "mine.md").read_text(encoding="utf-8")
    assert written.startswith("+++\n# ") and "the model never sees it" in written  # commented
    policy = load_policy("./mine.md")
    assert policy.name == "mine" and policy.categories == (("0", 0), ("1", 1)) and policy.output == "label"
    for heading in ("## INSTRUCTIONS", "## DEFINITIONS", "## VIOLATES (1)", "## SAFE (0)", "## EXAMPLES"):
        assert heading in policy.text
    assert "#" not in policy.text.replace("## ", "")  # no comment reaches the model


def test_new_refuses_to_overwrite_an_existing_file(cli, in_tmp):
    (in_tmp / "mine.md").write_text("keep me\n", encoding="utf-8")
    line = _one_error_line(cli("policies", "new", "mine"))
    assert "mine.md already exists" in line and "pick another name" in line
    assert (in_tmp / "mine.md").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("name,needle", [
    ("bad name", "not a plain file name"),
    ("no_such_dir/mine", "directory no_such_dir does not exist"),
])
def test_new_with_a_bad_name_is_one_line(cli, in_tmp, name, needle):
    assert needle in _one_error_line(cli("policies", "new", name))


def test_the_new_template_renders_without_edits(cli, in_tmp):
    assert cli("policies", "new", "mine").exit_code == 0
    rendered = cli("render", "hello", "--policy", "./mine.md", "--json")
    assert rendered.exit_code == 0, rendered.output
    prompt = json.loads(rendered.stdout)["local_prompt"]
    assert "## INSTRUCTIONS\nYou classify one user message" in prompt
    assert "+++" not in prompt and "the model never sees it" not in prompt


def test_compare_accepts_the_new_template_by_path(cli, in_tmp):
    require_shared(N50)
    assert cli("policies", "new", "mine").exit_code == 0
    result = cli("compare", "--backends", f"recorded[path={N50};side=api],recorded[path={N50};side=local]",
                 "--dataset", str(N50), "--policy", "./mine.md", "--output-dir", str(in_tmp / "out"), "--json")
    # the study's recorded answers are bare 0/1, and it reports 98 % binary agreement on these 50 rows
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metadata"]["policy"]["name"] == "mine"


def test_a_guide_style_policy_file_is_shown_as_a_binary_policy(cli, in_tmp):
    (in_tmp / "guide.md").write_text("## INSTRUCTIONS\nAnswer 1 if the message is spam, else 0.\n\n"
                                     "## EXAMPLES\n- \"WIN A FREE CRUISE\" → 1\n", encoding="utf-8")
    shown = cli("policies", "show", "./guide.md")
    assert shown.exit_code == 0, shown.output
    assert "guide (label; 0→0, 1→1;" in shown.stdout


@pytest.mark.parametrize("text,needle", [
    ("+++\n+++\n## Task\nAnswer 0 or 1.\n", "has an empty '+++' front matter"),
    ("+++\nname = \"x\"\n## Task\nAnswer 0 or 1.\n", "never closed"),
    ("", "is empty"),
])
def test_a_bad_policy_file_is_one_line_exit_2(cli, in_tmp, text, needle):
    (in_tmp / "p.md").write_text(text, encoding="utf-8")
    assert needle in _one_error_line(cli("policies", "show", "./p.md"))
