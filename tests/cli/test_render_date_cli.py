"""`--render-date` on `compare`, `classify` and `render`: a bad date is one line with exit 2; the date given is the
one the template writes and the one the answer is cached under."""

from __future__ import annotations

import json

import pytest

from tests.helpers.gptoss_template import expected_prompt


@pytest.mark.parametrize("command", [["compare", "--backends", "api,local"], ["classify", "hello"],
                                     ["render", "hello"]])
@pytest.mark.parametrize("date", ["2025-02-30", "05/08/2025", "tomorrow"])
def test_a_bad_render_date_is_one_line_with_exit_2(cli, tmp_path, command, date):
    result = cli(*command, "--render-date", date, "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert "--render-date must be a day written YYYY-MM-DD" in result.output and repr(date) in result.output


def test_render_run_takes_the_runs_own_date(cli, tmp_path):
    result = cli("render", "--run", str(tmp_path), "--example", "id01", "--render-date", "2001-02-03")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "the date the run recorded" in result.output


@pytest.fixture(scope="module")
def dated_model(tmp_path_factory):
    from tests.helpers.gptoss_template import build_dated_gptoss

    return build_dated_gptoss(tmp_path_factory.mktemp("dated-gptoss") / "model")


@pytest.mark.slow
def test_render_and_classify_use_the_date_given(cli, dated_model):
    from toxcmp.domain.policies import load_policy

    shown = json.loads(cli("render", "you idiot", "--model", str(dated_model), "--render-date", "2001-02-03",
                           "--max-new-tokens", "2", "--json").stdout)
    messages = [{"role": "system", "content": load_policy("toxic_simple").text},
                {"role": "user", "content": "you idiot"}]
    assert shown["local_prompt"] == expected_prompt(messages, "2001-02-03", reasoning_effort="low")
    assert shown["render_date"] == "2001-02-03"
    args = ["classify", "you idiot", "--backend", "local", "--model", str(dated_model), "--max-new-tokens", "2",
            "--device", "cpu", "--dtype", "float32", "--json"]
    first = json.loads(cli(*args, "--render-date", "2001-02-03").stdout)
    assert first["prompt_hash"] == shown["prompt_hash"] and first["cached"] is False
    again = json.loads(cli(*args, "--render-date", "2001-02-03").stdout)
    assert again["cached"] is True
    later = json.loads(cli(*args, "--render-date", "2019-12-31").stdout)  # another date: another prompt, no hit
    assert later["cached"] is False and later["prompt_hash"] != first["prompt_hash"]
