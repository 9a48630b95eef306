"""The live view tells the truth about labels (issue 23): one arm shows its running accuracy against the human
labels (not an agreement with nothing), and two arms that never both gave a label say so beside their "agreement".

Read from what the views wrote (a real pty for the live view of `toxcmp compare`, plain lines off a terminal);
expected values from the study file's and the sample's own columns and hand counts."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from toxcmp.analysis.arms import pair_row, tidy_row
from toxcmp.config import configs_dir
from toxcmp.domain.policies import load_policy
from toxcmp.domain.responses import ModelResponse
from toxcmp.report.live import LineObserver, LiveObserver, RunningAgreements

from tests.report.test_live_truth import ANSI, _pty_run

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
PROSE = "Sure! Here is a short poem about that."
POLICY = load_policy("toxic_simple")


def _command(out: Path, backends: str, dataset: Path, policy: str, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "toxcmp", "compare", "--backends", backends, "--dataset", str(dataset), "--policy",
            policy, "--model", model, "--output-dir", str(out / "runs"), "--cache-dir", str(out / "cache"), *extra]


def _n50_one_arm(out: Path, *extra: str) -> list[str]:
    return _command(out, f"recorded[path={N50};side=api;label=provider]", N50, "toxic_chat_claude_1",
                    "gpt-oss-safeguard-20b", *extra)


def _right() -> int:
    study = pl.read_parquet(N50)
    return int((study["api_parsed_successfully"]
                & (study["api_binary_label"].cast(pl.Int64) == study["ground_truth"])).sum())


def test_one_arm_live_view_shows_a_running_accuracy(tmp_path):
    right = _right()
    assert right == 38  # hand count: 13 of 25 toxic rows caught, all 25 others right
    screen = _pty_run(_n50_one_arm(tmp_path, "--threshold", "0.75"))  # 76 % ≥ 75 %: exit 0
    live = screen[:screen.index("PASS: accuracy against the human labels")]
    assert "latest examples" in live and "correct" in live  # the live view, with its evaluation columns
    assert f"accuracy {right}/50 ({right / 50:.1%})" in live
    assert "agreement" not in live  # nothing to agree with


def test_one_arm_plain_lines_show_the_accuracy(tmp_path):
    result = subprocess.run(_n50_one_arm(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr  # 76 % < 95 %: the evaluation fails
    lines = result.stdout.splitlines()
    assert lines[0].startswith("compare: 50 examples · provider against the human labels · run ")
    progress = [line for line in lines if line.startswith("[")]
    assert progress == [progress[-1]] and progress[-1].startswith(f"[50/50] accuracy {_right()}/50 (76.0%) · ")


@pytest.fixture(scope="module")
def prose_recording(tmp_path_factory) -> Path:
    """Both arms of the shipped 24-row sample answer prose: no row is labelled by either, let alone both."""
    out = tmp_path_factory.mktemp("prose")
    sample = pl.read_csv(SAMPLE)
    path = out / "backend_comparison_prose.parquet"
    pl.DataFrame({"conv_id": sample["conv_id"], "text": sample["user_input"], "ground_truth": sample["toxicity"],
                  "api_response": [PROSE] * sample.height, "local_response": [PROSE] * sample.height,
                  "api_reasoning": [""] * sample.height, "local_reasoning": [""] * sample.height}).write_parquet(path)
    return path


def _prose_arms(recording: Path) -> str:
    return f"recorded[path={recording};side=api;label=api],recorded[path={recording};side=local;label=local]"


def test_agreement_without_a_row_labelled_by_both_says_so_in_plain_lines(prose_recording, tmp_path):
    rows = pl.read_csv(SAMPLE).height
    assert rows == 24
    command = _command(tmp_path, _prose_arms(prose_recording), SAMPLE, "toxic_simple", "smollm2-135m")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr  # inconclusive
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("[")]
    assert line.startswith(f"[{rows}/{rows}] agreement {rows}/{rows} (100.0%) · labelled by both 0/{rows} · "), line


def test_agreement_without_a_row_labelled_by_both_says_so_live(prose_recording, tmp_path):
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare

    buffer = io.StringIO()
    from toxcmp.backends import BackendConfig

    cfg = CompareConfig(backends=_prose_arms(prose_recording), dataset=str(SAMPLE), policy="toxic_simple",
                        model="smollm2-135m", output_dir=tmp_path / "runs", unparsed_as="0",
                        backend=BackendConfig(cache_dir=tmp_path / "cache"))
    result = run_compare(cfg, LiveObserver(Console(file=buffer, force_terminal=True, width=160)))
    assert result.summary["n_both_labelled"] == 0 and result.summary["verdict"] == "inconclusive"
    # forced to 0, the prose "agrees" on every row, yet neither arm gave a label: the view says both things
    assert "agreement 24/24 (100.0%) · labelled by both 0/24" in ANSI.sub("", buffer.getvalue())


def _rows(answers: tuple[str, str, str], truth: int | None = 0) -> dict[str, dict]:
    example = {"example_id": "ex", "text": "t", "toxicity": truth}
    tidy = [tidy_row(example, arm, 0, ModelResponse(content=a, reasoning="", raw_text=a, backend="rule", model="m",
                                                    latency_s=0.1), POLICY, False)
            for arm, a in zip(("ref", "b", "c"), answers)]
    return {arm: pair_row(tidy[0], row, [(POLICY, False)] * 2) for arm, row in zip(("b", "c"), tidy[1:])}


def test_three_arms_each_comparison_says_when_none_of_its_rows_has_two_labels():
    running = RunningAgreements(["ref", "b", "c"])
    for _ in range(3):  # ref and b answer prose (no label, "agreeing"); c says 0 (no label against none)
        running.add(_rows((PROSE, PROSE, "0")))
    assert str(running) == "agreement with ref: b 3/3 (100.0%, labelled by both 0/3) · c 0/3 (0.0%, labelled by both 0/3)"
    labelled = RunningAgreements(["ref", "b", "c"])
    labelled.add(_rows(("0", "0", "1")))
    assert str(labelled) == "agreement with ref: b 1/1 (100.0%) · c 0/1 (0.0%)"  # as before when labels exist


def test_one_arm_without_human_labels_has_no_accuracy_and_says_why():
    buffer = io.StringIO()
    observer = LineObserver(Console(file=buffer, force_terminal=False, width=200))
    observer.start(3, ["arm"], {"run_id": "test"})
    answer = ModelResponse(content="0", reasoning="", raw_text="0", backend="rule", model="m", latency_s=0.1)
    for i in range(3):
        row = tidy_row({"example_id": f"e{i}", "text": "t", "toxicity": None}, "arm", 0, answer, POLICY, False)
        observer.row({"arm": row}, i + 1, {"arm": {"calls": i + 1, "seconds": 0.1, "cached": 0}})
    (line,) = [x for x in buffer.getvalue().splitlines() if x.startswith("[")]
    assert line.startswith("[3/3] accuracy — · human-labelled 0/3 · "), line


def test_one_arm_live_table_marks_each_answer_against_its_human_label():
    buffer = io.StringIO()
    observer = LiveObserver(Console(file=buffer, force_terminal=True, width=120))
    observer.start(3, ["arm"], {"run_id": "test"})
    for i, (said, truth) in enumerate((("1", 1), ("0", 1), (PROSE, 0))):  # right, missed, no label (wrong)
        answer = ModelResponse(content=said, reasoning="", raw_text=said, backend="rule", model="m", latency_s=0.1)
        row = tidy_row({"example_id": f"e{i}", "text": "t", "toxicity": truth}, "arm", 0, answer, POLICY, False)
        observer.row({"arm": row}, i + 1, {"arm": {"calls": i + 1, "seconds": 0.3, "cached": 0}})
    observer.stop()
    screen = ANSI.sub("", buffer.getvalue())
    assert "accuracy 1/3 (33.3%)" in screen
    table = [line for line in screen.splitlines() if line.startswith("│ e")][-3:]
    assert [[c.strip() for c in line.split("│")[1:5]] for line in table] == [
        ["e0", "1", "1", "✓"], ["e1", "1", "0", "✗"], ["e2", "0", "unparsed", "✗"]]


def test_a_row_both_arms_left_without_a_label_is_no_green_tick():
    from toxcmp.report.live import agree_mark

    prose = _rows((PROSE, PROSE, "0"))["b"]  # ref and b both answered prose: the same outcome, no label
    labelled = _rows(("0", "0", "1"))
    assert prose["binary_match"] is True and agree_mark(prose) == "[dim]✓[/]"
    assert agree_mark(labelled["b"]) == "[green]✓[/]" and agree_mark(labelled["c"]) == "[red]✗[/]"
