"""Every number on screen is true (issue 23), while the run runs: an arm that has not started says so, no ETA
until there is a rate (and never 0 while rows remain), "now" moves on once answers arrive, "done" only when done,
and off a terminal a progress line every few seconds at most.

The live view is read from what it wrote to its terminal (a real pty for `toxcmp compare`), never from its
internals."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from toxcmp.analysis.arms import pair_row, tidy_row
from toxcmp.config import configs_dir
from toxcmp.domain.policies import load_policy
from toxcmp.domain.responses import ModelResponse
from toxcmp.report.live import LineObserver, LiveObserver
from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare

from tests.helpers import doubles
from tests.run.test_compare import plugin_backends  # noqa: F401 - the rule/quirky entry points, autouse

pytestmark = pytest.mark.serial  # read against wall time: redraws 4 times a second, rates, throttled lines

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
POLICY = load_policy("toxic_simple")
REDRAW_WAIT_S = 10.0  # the live view redraws 4 times a second; a busy shared machine may delay its thread


def _screen(buffer: io.StringIO) -> str:
    return ANSI.sub("", buffer.getvalue())


def _live(total: int, labels=("ref", "arm")) -> tuple[LiveObserver, io.StringIO]:
    buffer = io.StringIO()
    observer = LiveObserver(Console(file=buffer, force_terminal=True, width=160))
    observer.start(total, list(labels), {"run_id": "test"})
    return observer, buffer


def _record(i: int) -> dict[str, dict]:
    """Example i's pair row, as the run hands it to the view: both arms answered "0"."""
    example = {"example_id": f"ex{i:03d}", "text": f"text {i}", "toxicity": 0}
    answer = ModelResponse(content="0", reasoning="", raw_text="0", backend="rule", model="m", latency_s=0.1)
    rows = [tidy_row(example, arm, 0, answer, POLICY, False) for arm in ("ref", "arm")]
    return {"arm": pair_row(rows[0], rows[1], [(POLICY, False)] * 2)}


def _stats(done: int) -> dict[str, dict]:
    return {label: {"calls": done, "seconds": 0.1 * done, "cached": 0} for label in ("ref", "arm")}


def _last(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    assert found, (pattern, text[-1500:])
    return found[-1]


def _wait_for(pattern: str, buffer: io.StringIO, after: str = "") -> str:
    """The last line matching `pattern` once the view has drawn one (and, with `after`, once that line no longer
    reads `after`): the redraw thread runs 4 times a second, but on a loaded machine a fixed sleep can miss it."""
    deadline = time.monotonic() + REDRAW_WAIT_S
    while True:
        found = re.findall(pattern, _screen(buffer))
        if found and (not after or after not in found[-1]):
            return found[-1]
        if time.monotonic() > deadline:
            return _last(pattern, _screen(buffer))
        time.sleep(0.05)


def _burst(observer: LiveObserver, first: int, n: int) -> None:
    for done in range(first, first + n):
        observer.row(_record(done), done, _stats(done))


def test_no_eta_until_there_is_a_rate_then_the_measured_one():
    """A batch of 16 rows comes out at once (a batched local model, the cache): that is no rate, so no ETA — not
    `ETA 00:00:00` with 184 rows to go. The next batch about a second later gives one: 168 rows left at 16 rows per
    gap between the bursts (the gap is measured here, so a loaded machine that stretches it moves the ETA with it)."""
    observer, buffer = _live(200)
    first_started = time.perf_counter()
    _burst(observer, 1, 16)
    first_ended = time.perf_counter()
    line = _wait_for(r"[^\n]*16/200[^\n]*", buffer)
    assert "ETA" not in line, line
    time.sleep(max(0.0, first_started + 1.0 - time.perf_counter()))
    second_started = time.perf_counter()
    _burst(observer, 17, 16)
    second_ended = time.perf_counter()
    _wait_for(r"32/200[^\n]*ETA \d\d:\d\d:\d\d", buffer)
    observer.stop()
    h, m, s = map(int, _last(r"32/200[^\n]*ETA (\d\d):(\d\d):(\d\d)", _screen(buffer)))
    shortest, longest = second_started - first_ended, second_ended - first_started
    assert 168 / 16 * shortest - 1 <= 3600 * h + 60 * m + s <= 168 / 16 * longest + 1, (shortest, longest)


def test_an_announcement_gives_way_once_answers_arrive():
    observer, buffer = _live(10)
    observer.phase("ref: answering 10 example(s)", detail=True)
    observer.phase("llama.cpp is loading the model")
    assert _wait_for(r"now: ([^\n]*)", buffer).strip() == "llama.cpp is loading the model"
    _burst(observer, 1, 3)
    assert _wait_for(r"now: ([^\n]*)", buffer, after="llama.cpp").strip() == "ref: answering 10 example(s)"
    observer.stop()


@pytest.fixture
def first_text_empty(tmp_path) -> Path:
    """Eight rows, the first with no text: it is answered (as an error) before either arm has started."""
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(8)], "user_input": [""] + [f"text {i}" for i in range(1, 8)],
                  "toxicity": [0] * 8}).write_csv(path)
    return path


def test_an_arm_that_has_not_started_says_so_not_cached(first_text_empty, tmp_path):
    doubles.RuleBackend.delay_s = doubles.QuirkyBackend.delay_s = 0.3  # row 1 stays on screen for a redraw
    buffer = io.StringIO()
    cfg = CompareConfig(backends="rule,quirky", dataset=str(first_text_empty), output_dir=tmp_path, chunk_size=8)
    run_compare(cfg, LiveObserver(Console(file=buffer, force_terminal=True, width=160)))
    first = _last(r"[^\n]* 1/8 [^\n]*", _screen(buffer))
    assert "rule: not started" in first and "quirky: not started" in first, first
    assert "cached" not in first, first  # nothing was: the cache is empty


def _pty_run(args: list[str], columns: int = 150) -> str:
    """`args` in a real pseudo-terminal: everything it wrote there, colours and cursor moves left out."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(columns), LINES="50")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the other end closed: the command has finished
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=30) == 0
    return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def _compare_n50(out: Path) -> list[str]:
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    return [sys.executable, "-m", "toxcmp", "compare", "--backends", both, "--dataset", str(N50), "--policy",
            "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--output-dir", str(out / "runs"),
            "--cache-dir", str(out / "cache")]


def test_the_live_view_in_a_real_pty_says_done_only_when_done(tmp_path):
    """The rows are in before the run has scored them and written its files: the last frame says so, and the
    report printed after it is the sign that the run is done."""
    screen = _pty_run(_compare_n50(tmp_path))
    assert "50/50" in screen and "latest examples" in screen  # the live view, not plain lines
    assert "now: done" not in screen
    live = screen[:screen.index("PASS: binary agreement")]
    assert "—/—" in live and "0.00/" not in live  # the study file records no latency: none shown, not 0 s
    scoring = screen.rindex("now: all 50 rows answered; scoring and writing the results")
    assert scoring < screen.index("PASS: binary agreement") < screen.index("report: ")
    early = [m.group(0) for m in re.finditer(r"(\d+)/50 [^\n]*", screen) if int(m.group(1)) < 50]
    assert not [frame for frame in early if "ETA 00:00:00" in frame]  # rows remain: an ETA is never 0


def test_off_a_terminal_the_progress_lines_are_throttled_to_the_last_one(tmp_path):
    """50 recorded rows arrive within a second: one progress line, the last, not one per 10 %."""
    result = subprocess.run(_compare_n50(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 1 and progress[0].startswith("[50/50] agreement 48/50 (96.0%)"), progress


def _lines(buffer: io.StringIO) -> list[str]:
    return [line for line in buffer.getvalue().splitlines() if line.startswith("[")]


def test_plain_lines_at_most_one_every_few_seconds_and_always_the_last():
    buffer = io.StringIO()
    observer = LineObserver(Console(file=buffer, force_terminal=False, width=200), every_s=0.3)
    observer.start(20, ["ref", "arm"], {"run_id": "test"})
    started = time.perf_counter()
    for done in range(1, 21):
        time.sleep(0.05)
        observer.row(_record(done), done, _stats(done))
    elapsed = time.perf_counter() - started
    lines = _lines(buffer)
    assert 2 <= len(lines) <= elapsed / 0.3 + 1 and lines[-1].startswith("[20/20]"), lines


def test_an_interrupted_run_still_prints_its_last_line():
    buffer = io.StringIO()
    observer = LineObserver(Console(file=buffer, force_terminal=False, width=200))
    observer.start(10, ["ref", "arm"], {"run_id": "test"})
    for done in range(1, 5):  # four rows at once, then Ctrl-C
        observer.row(_record(done), done, _stats(done))
    observer.stop()
    assert [line.split(" ·")[0] for line in _lines(buffer)] == ["[4/10] agreement 4/4 (100.0%)"]
