"""Issue 23: click's own usage errors (a value out of range, an unknown option or command, a missing argument) are
one `error:` line naming the command's help, exit 2, no box; every command's help shows one metavar style (no
`<bool>` on --help or flags, arguments in capitals, no `<list[Path]>`) and no example cut at 80 columns.

Each case runs the real CLI (typer's CliRunner over toxcmp's app, and one subprocess through `python -m toxcmp`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from toxcmp.errors import ExitCode

OUT_OF_RANGE = [
    ("compare", "--concurrency", "0"), ("compare", "--timeout", "0"), ("compare", "--threads", "0"),
    ("compare", "--max-retries", "-1"), ("compare", "--repeats", "0"), ("compare", "--margin", "2"),
    ("classify", "--concurrency", "0"), ("bench", "api", "--requests", "0"),
]


def _one_error_line(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "╭" not in result.output and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("args", OUT_OF_RANGE, ids=[" ".join(a) for a in OUT_OF_RANGE])
def test_an_out_of_range_value_is_one_line(cli, args):
    result = cli(*args)
    line = _one_error_line(result)
    assert result.exit_code == ExitCode.USAGE
    assert line.startswith("error:") and args[-2] in line and "--help'" in line, line


def test_an_unknown_option_is_one_line_with_the_close_matches(cli):
    result = cli("compare", "--backend", "api")
    line = _one_error_line(result)
    assert result.exit_code == ExitCode.USAGE
    assert "--backend" in line and "--backends" in line and "toxcmp compare --help" in line, line


def test_an_unknown_command_and_a_missing_argument_are_one_line(cli):
    for args, word in ((("nosuch",), "nosuch"), (("rescore",), "PATHS"), (("providers",), "MODEL")):
        result = cli(*args)
        assert result.exit_code == ExitCode.USAGE and word in _one_error_line(result), result.output


def test_the_installed_entry_point_prints_the_same_one_line():
    out = subprocess.run([sys.executable, "-m", "toxcmp", "compare", "--concurrency", "0"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == ExitCode.USAGE
    assert out.stderr.strip().startswith("error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr


COMMANDS = [("classify",), ("render",), ("view",), ("runs",), ("verify-setup",), ("compare",), ("rescore",),
            ("plan",), ("providers",), ("cache", "info"), ("cache", "clear"), ("policies", "show"),
            ("policies", "new"), ("backends", "list")] + [("bench", name) for name in (
    "api", "local", "serve", "engines", "html", "busy", "sides", "report", "arms")]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_has_one_metavar_style_and_nothing_cut(cli, command):
    text = cli(*command, "--help", env={"COLUMNS": "80"}).output
    assert "<bool>" not in text and "<list[" not in text, text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert re.findall(r"[\[{]([a-z_]+)[\]}]", usage) == [], usage  # arguments in capitals: [TEXT], {RUN_DIR}
    cut = [line for line in text.splitlines() if re.search(r"\w…\s*│\s*$", line)]
    assert cut == [], cut  # rich's ellipsis at a box edge: a word too long for the column was cut


@pytest.mark.parametrize("args, words", [
    (("--alpha", "0"), "--alpha must be in (0, 1) (got 0.0) — e.g. --alpha 0.05"),
    (("--power", "0"), "--power must be in (0, 1) (got 0.0) — e.g. --power 0.8"),
    (("--margin", "2"), "--margin must be in (0, 1) (got 2.0) — e.g. --margin 0.02"),
    (("--floor", "1"), "--floor must be in [0, 1) (got 1.0)"),
])
def test_plan_checks_each_probability_with_its_own_example(cli, args, words):
    result = cli("plan", *args)
    assert result.exit_code == ExitCode.USAGE and words in _one_error_line(result)


def test_every_commands_summary_is_one_sentence_and_markup_keeps_its_brackets(cli):
    from typer.main import get_command

    from toxcmp.cli.app import app

    group = get_command(app)
    for name, command in group.commands.items():
        summary = (command.help or "").strip().split("\n\n")[0]
        assert "\n" not in summary, (name, summary)  # the command list would break it mid-sentence
    text = cli("classify", "--help", env={"COLUMNS": "250"}).output
    shown = " ".join(text.split())  # typer 0.16 (the floor) prints rich's escape as written: \[llamacpp]
    assert "pip install 'toxcmp[llamacpp]'" in shown or "pip install 'toxcmp\\[llamacpp]'" in shown
    providers = cli("providers", "--help").output
    assert "api[provider=*]" in providers or "api\\[provider=*]" in providers
