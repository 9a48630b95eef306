"""The run tells the truth while it runs (issue 17): per-row progress, a per-row ETA, what is happening now,
no third-party progress bars in the view, and plain lines that do not wrap off a terminal."""

from __future__ import annotations

import io
import re

import polars as pl
import pytest
from rich.console import Console

from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare
from toxcmp.report.live import LineObserver, LiveObserver, eta_text

from tests.helpers import doubles
from tests.run.test_compare import plugin_backends  # noqa: F401 - the same rule/quirky entry points, autouse


pytestmark = pytest.mark.serial  # the view is read against wall time: per-row delays, redraws, an ETA


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(8)], "user_input": [f"text {i}" for i in range(8)],
                  "toxicity": [0] * 8}).write_csv(path)
    return path


def test_eta_comes_from_the_per_row_rate():
    assert eta_text(0, 10, None) == ""  # no rate yet: no ETA at all
    assert eta_text(3, 10, 2.0) == "ETA 00:00:14"  # 7 left × 2 s
    assert eta_text(199, 200, 1e-6) == "ETA 00:00:01"  # a row remains: never 0
    assert eta_text(10, 10, None) == "ETA 00:00:00"


def test_live_view_updates_per_row_and_shows_the_phase(dataset, tmp_path):
    doubles.QuirkyBackend.delay_s = 0.3  # slow enough for the view (4 redraws/s) to show every row
    doubles.RuleBackend.announce = "rule: loading the model"
    doubles.RuleBackend.delay_s = 0.15  # the phase stays on screen while side A answers
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path, chunk_size=8,
                        concurrent_sides=False)
    run_compare(cfg, LiveObserver(console))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())  # colours and cursor moves out
    seen = {int(m) for m in re.findall(r"\b(\d)/8\b", text)}
    assert {1, 2, 3, 4, 5, 6, 7, 8} <= seen, seen  # one chunk of 8, yet every row shows as it finishes
    assert "now: rule: loading the model" in text and "now: quirky: answering 8 example(s)" in text
    assert re.search(r"ETA 00:00:0\d", text)  # a real estimate mid-run, from the measured per-row rate


def test_live_view_with_arms_at_their_own_pace_shows_each_row_as_it_completes(dataset, tmp_path):
    """The arms run at once, each at its own pace (rule runs ahead of quirky): a row shows the moment its last
    arm answers, and the phase line says what each arm is doing."""
    doubles.QuirkyBackend.delay_s = 0.3
    doubles.RuleBackend.delay_s = 0.05
    buffer = io.StringIO()
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path, chunk_size=8)
    result = run_compare(cfg, LiveObserver(Console(file=buffer, force_terminal=True, width=120)))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert result.status == "complete" and result.summary["metadata"]["scheduling"]["lanes"] == [["rule"], ["quirky"]]
    seen = {int(m) for m in re.findall(r"\b(\d)/8\b", text)}
    assert {1, 2, 3, 4, 5, 6, 7, 8} <= seen, seen
    assert "now: quirky: answering 8 example(s)" in text or "now: rule: answering 8 example(s)" in text


def test_third_party_progress_bars_are_silenced_under_the_live_view(dataset, tmp_path):
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    enable_progress_bars()
    try:
        cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path)
        run_compare(cfg, LiveObserver(Console(file=io.StringIO(), force_terminal=True, width=120)))
        assert are_progress_bars_disabled()
    finally:
        enable_progress_bars()


def test_plain_lines_do_not_wrap_off_a_terminal(dataset, tmp_path):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=80)
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path,
                        run_id="a-rather-long-run-id-" + "x" * 60)
    run_compare(cfg, LineObserver(console))
    first = buffer.getvalue().splitlines()[0]
    assert first.startswith("compare: 8 examples") and first.endswith("x" * 60) and len(first) > 80


@pytest.fixture
def quirky_dataset(tmp_path):
    """rule answers 0 1 0 0 0 0; quirky: 0 1 refusal 1 0 unparsed (it refuses, flips and rambles)."""
    path = tmp_path / "quirks.csv"
    texts = ["hello", "you idiot", "please refuse this", "flip me", "nice day", "ramble on"]
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(6)], "user_input": texts,
                  "toxicity": [0, 1, 0, 0, 0, 0]}).write_csv(path)
    return path


def test_a_three_arm_live_view_shows_every_arm_against_the_reference(quirky_dataset, tmp_path):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=140)
    cfg = CompareConfig(backends="rule,quirky,rule[label=rule2]", dataset=str(quirky_dataset), output_dir=tmp_path,
                        chunk_size=6)
    run_compare(cfg, LiveObserver(console))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    for header in ("A rule", "B quirky", "C rule2", "latency A/B/C"):
        assert header in text, header
    # by hand: quirky agrees on hello, idiot and nice day (3 of 6); rule2 is rule again (6 of 6)
    assert "agreement with rule: quirky 3/6 (50.0%) · rule2 6/6 (100.0%)" in text
    # "flip me": truth 0, rule 0, quirky 1, rule2 0 → quirky disagrees, rule2 agrees
    assert re.search(r"id03\s*│\s*0\s*│\s*0\s*│\s*1\s*│\s*0\s*│\s*✗ ✓\s*│", text), text[-2000:]


def test_plain_lines_of_a_three_arm_run_show_each_comparison(quirky_dataset, tmp_path):
    buffer = io.StringIO()
    cfg = CompareConfig(backends="rule,quirky,rule[label=rule2]", dataset=str(quirky_dataset), output_dir=tmp_path)
    run_compare(cfg, LineObserver(Console(file=buffer, force_terminal=False, width=200)))
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("compare: 6 examples · rule vs quirky vs rule2 · run ")
    assert lines[-1].startswith("[6/6] agreement with rule: quirky 3/6 (50.0%) · rule2 6/6 (100.0%) · ")
