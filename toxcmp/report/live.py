"""The run while it runs: a live terminal view (progress, ETA, phase, latest rows) or plain lines for logs and CI.

Both show every arm against the reference: the run hands each finished example's pair rows, one per comparison,
keyed by arm label in arm order (the first is the headline comparison), and each comparison keeps its own
running agreement — beside how many rows both arms labelled, when none (two answers without a label "agree", and
that is no success). One arm is an evaluation: the run hands the arm's own row, and the view keeps a running
accuracy against the human labels instead.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Collection, Mapping, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


def side_letter(k: int) -> str:
    """A, B, C, … for the arms in run order (the reference is A)."""
    return chr(ord("A") + k) if k < 26 else str(k + 1)


def latency_cell(row: dict[str, Any] | None, p: str, replayed: bool) -> str:
    """A side's latency; a replayed arm's 0 s is a recording that holds none: no latency, not 0."""
    if row is None or (replayed and not row[f"{p}_latency_s"]):
        return "—"
    return f"{row[f'{p}_latency_s']:.2f}s"


def truth_cell(toxicity: Any) -> str:
    """The human label: 0 or 1; a row without one shows —, not "None"."""
    return "—" if toxicity is None else str(int(toxicity))


def recent_table(records: Sequence[Mapping[str, dict[str, Any]]], labels: Sequence[str],
                 replayed: Collection[str] = ()) -> Table:
    """The latest examples: each arm's outcome, agreement with the reference per comparison, cache and latency.
    `replayed`: the arms that replay a recording. One arm: `recent_evaluation_table`."""
    if len(labels) == 1:
        return recent_evaluation_table(records, labels[0], labels[0] in replayed)
    t = Table(expand=False, title="latest examples", title_justify="left")
    letters = "/".join(side_letter(k) for k in range(len(labels)))
    for col in ("id", "truth", *(f"{side_letter(k)} {label}" for k, label in enumerate(labels)), "agree", "cached",
                f"latency {letters}"):
        t.add_column(escape(col))
    for record in records:
        first = next(iter(record.values()))
        arms = [record.get(label) for label in labels[1:]]
        sides = [(first, "a")] + [(row, "b") for row in arms]
        agree = " ".join(agree_mark(row) for row in arms)
        cached = "/".join("—" if row is None else ("y" if row[f"{p}_cached"] else "n") for row, p in sides)
        latency = "/".join(latency_cell(row, p, label in replayed) for (row, p), label in zip(sides, labels))
        t.add_row(escape(first["example_id"][:10]), truth_cell(first["toxicity"]),
                  *("—" if row is None else escape(row[f"{p}_outcome"]) for row, p in sides), agree, cached,
                  latency)
    return t


def agree_mark(row: dict[str, Any] | None) -> str:
    """✓ (green: the same label), ✗, — (an error); a dim ✓ where the sides "agree" without both giving a label (two
    refusals, two unparsed answers, labels forced by --unparsed-as): the same outcome, no success."""
    if row is None or row["binary_match"] is None:
        return "—"
    if not row["binary_match"]:
        return "[red]✗[/]"
    return "[green]✓[/]" if row.get("a_parse_ok") and row.get("b_parse_ok") else "[dim]✓[/]"


def correct_mark(row: dict[str, Any]) -> str:
    """One arm's answer against the human label: ✓, ✗ (no label from the arm counts as wrong), — (no human label,
    or no answer)."""
    if row.get("error") or row.get("toxicity") is None:
        return "—"
    return "[green]✓[/]" if row.get("binary") is not None and row["binary"] == int(row["toxicity"]) else "[red]✗[/]"


def recent_evaluation_table(records: Sequence[Mapping[str, dict[str, Any]]], label: str, replayed: bool) -> Table:
    """The latest examples of one arm: its outcome against the human label, cache and latency."""
    t = Table(expand=False, title="latest examples", title_justify="left")
    for col in ("id", "truth", f"A {label}", "correct", "cached", "latency"):
        t.add_column(escape(col))
    for record in records:
        row = next(iter(record.values()))
        latency = "—" if replayed and not row["latency_s"] else f"{row['latency_s']:.2f}s"
        t.add_row(escape(row["example_id"][:10]), truth_cell(row["toxicity"]),
                  escape(row["outcome"]), correct_mark(row), "y" if row["cached"] else "n", latency)
    return t


def arm_pace(s: dict[str, Any]) -> str:
    """One arm's pace so far: its measured rate, the answers it took from the cache, or that it has not started."""
    fresh, cached = s["calls"], s.get("cached", 0)
    if not fresh:
        return f"{cached} cached" if cached else "not started"
    rate = f"{fresh / s['seconds']:.2f} ex/s" if s["seconds"] else "answering"
    return f"{rate} + {cached} cached" if cached else rate


def throughput_text(stats: dict[str, Any]) -> str:
    return " · ".join(f"{label}: {arm_pace(s)}" for label, s in stats.items())


class RunningAgreement:
    """One comparison's binary agreement so far (rows with an error on either side left out), and how many of
    those rows both arms labelled: when none, the agreement is two answers without a label, and says so."""

    def __init__(self) -> None:
        self.agree = 0
        self.scored = 0
        self.both_labelled = 0

    def add(self, row: dict[str, Any]) -> None:
        if row["binary_match"] is not None:
            self.scored += 1
            self.agree += bool(row["binary_match"])
            self.both_labelled += bool(row.get("a_parse_ok")) and bool(row.get("b_parse_ok"))

    def unlabelled(self) -> str | None:
        """`labelled by both 0/24` while no scored row has a label from both arms; else None."""
        return f"labelled by both 0/{self.scored}" if self.scored and not self.both_labelled else None

    def counts(self) -> str:
        if not self.scored:
            return "—"
        caveat = self.unlabelled()
        return f"{self.agree}/{self.scored} ({self.agree / self.scored:.1%}" + (f", {caveat})" if caveat else ")")

    def __str__(self) -> str:
        caveat = self.unlabelled()
        if not caveat:
            return f"agreement {self.counts()}"
        return f"agreement {self.agree}/{self.scored} ({self.agree / self.scored:.1%}) · {caveat}"


class RunningAccuracy:
    """One arm (an evaluation): its accuracy against the human labels so far — rows without an answer or without
    a human label left out, an answer without a label counted as wrong (`scoring.evaluate`'s rule)."""

    def __init__(self) -> None:
        self.correct = 0
        self.labelled = 0
        self.answered = 0

    def add(self, rows: Mapping[str, dict[str, Any]]) -> None:
        for row in rows.values():
            if row.get("error"):
                continue
            self.answered += 1
            if row.get("toxicity") is not None:
                self.labelled += 1
                self.correct += row.get("binary") is not None and row["binary"] == int(row["toxicity"])

    def __str__(self) -> str:
        if not self.labelled:
            return f"accuracy — · human-labelled 0/{self.answered}" if self.answered else "accuracy —"
        text = f"accuracy {self.correct}/{self.labelled} ({self.correct / self.labelled:.1%})"
        return text + (f" · human-labelled {self.labelled}/{self.answered}" if self.labelled < self.answered else "")


def running_for(labels: Sequence[str]) -> "RunningAgreements | RunningAccuracy":
    """What the view keeps running: each comparison's agreement; one arm's accuracy against the human labels."""
    return RunningAccuracy() if len(labels) == 1 else RunningAgreements(labels)


class RunningAgreements:
    """Every comparison's running agreement, in arm order. Two arms read as before: `agreement 9/12 (75.0%)`;
    more: `agreement with REF: B 9/12 (75.0%) · C 12/12 (100.0%)`."""

    def __init__(self, labels: Sequence[str] = ()) -> None:
        self.reference = labels[0] if labels else None
        self.by_arm: dict[str, RunningAgreement] = {label: RunningAgreement() for label in labels[1:]}

    def add(self, rows: Mapping[str, dict[str, Any]]) -> None:
        for arm, row in rows.items():
            self.by_arm.setdefault(arm, RunningAgreement()).add(row)

    def __str__(self) -> str:
        if len(self.by_arm) <= 1:
            return str(next(iter(self.by_arm.values()), RunningAgreement()))
        return (f"agreement with {self.reference}: "
                + " · ".join(f"{arm} {a.counts()}" for arm, a in self.by_arm.items()))


BURST_S = 0.5  # rows finishing within this long of the first came out together (startup, a batch, the cache)


class RowRate:
    """Seconds per row, measured from the end of the first burst of rows on: rows that come out together (a
    batch, cached answers) took no time each, so they are not a rate."""

    def __init__(self) -> None:
        self.first_at: float | None = None
        self.anchor: tuple[float, int] | None = None  # (when, rows done) the measurement starts from
        self.last: tuple[float, int] | None = None

    def add(self, done: int) -> None:
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        if now - self.first_at <= BURST_S:
            self.anchor = (now, done)
        self.last = (now, done)

    def seconds_per_row(self) -> float | None:
        if self.anchor is None or self.last is None:
            return None
        (t0, d0), (t1, d1) = self.anchor, self.last
        return (t1 - t0) / (d1 - d0) if d1 > d0 and t1 > t0 else None


def eta_text(done: int, total: int, seconds_per_row: float | None) -> str:
    """Remaining time from the measured per-row rate: nothing until there is a rate, and at least a second while
    rows remain."""
    if done >= total:
        return "ETA 00:00:00"
    if seconds_per_row is None:
        return ""
    seconds = max(1, math.ceil((total - done) * seconds_per_row))
    return "ETA " + time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else "ETA > 1 day"


def after_the_rows(done: int, total: int) -> str:
    """What the run does once its rows are in (or it stopped): it scores them and writes the files, then reports."""
    rows = f"all {total} rows answered" if done >= total else f"stopped after {done} of {total} rows"
    return f"{rows}; scoring and writing the results"


def silence_third_party_progress() -> None:
    """transformers' and the Hub's own progress bars would print above the live view: turn them off."""
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


class LiveObserver:
    """Terminal view: progress bar with a per-row ETA, what is happening now (loading, starting a server…),
    per-arm pace, the latest rows and each comparison's running agreement. Updated per finished row.

    "now" is a claim about the present: a backend's announcement (loading the model) holds until rows arrive,
    then the arms' own step (answering) shows again; once the rows are in, the run says it is scoring (each step
    of it: margins, divergences, writing), and the view stops, on the run's last word, after the files are
    written. A caller that says nothing after the rows gets `after_the_rows` on the last frame."""

    def __init__(self, console: Console, recent: int = 8):
        self.console = console
        self.recent_n = recent
        self.recent: list[Mapping[str, dict[str, Any]]] = []
        self.agreement = RunningAgreements()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[rate]}"), console=console)
        self.live: Live | None = None
        self.labels: Sequence[str] = ("A", "B")
        self.replayed: set[str] = set()  # arms that replay a recording
        self.now = "starting"
        self.step: str | None = None  # the arms' latest step (detail phase): what rows arriving mean
        self.announced = False  # `now` is a backend's announcement, not a step
        self.total = 0
        self.done = 0
        self.rate = RowRate()
        self.said = False  # a phase came after the last row (the run's scoring steps)

    def view(self) -> Group:
        """What the screen shows now. It ends on a line of its own: a redraw never runs its first line (the
        progress bar) on from the last line of the frame before it, for whatever reads the terminal's stream."""
        return Group(self.progress, Text(f"now: {self.now}", style="dim"),
                     recent_table(self.recent, self.labels, self.replayed), Text(str(self.agreement)), Text(""))

    def start(self, total, labels, meta):  # noqa: D102
        silence_third_party_progress()
        self.labels, self.total = list(labels), total
        self.replayed = {a.get("label") for a in meta.get("arms") or [] if a.get("backend") == "recorded"}
        self.agreement = running_for(self.labels)
        self.task = self.progress.add_task("compare", total=total, rate="", eta="")
        self.live = Live(self.view(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def row(self, rows, done, stats):  # noqa: D102
        self.done = done
        self.said = False
        self.rate.add(done)
        if self.announced:  # answers arrive: whatever was announced (loading, starting a server) is over
            self.now, self.announced = self.step or "answering", False
        self.agreement.add(rows)
        self.recent = (self.recent + [rows])[-self.recent_n:]
        eta = eta_text(done, self.total, self.rate.seconds_per_row())
        self.progress.update(self.task, completed=done, rate=throughput_text(stats), eta=eta)
        self._refresh()

    def phase(self, message, detail=False):  # noqa: D102
        if detail:
            self.step = message
        self.now, self.announced, self.said = message, not detail, True
        if self.live:  # drawn now: a step that takes less than a redraw (1/4 s) is still seen
            self.live.update(self.view(), refresh=True)
        else:  # after the rows: each step of the scoring on a line of its own
            self.console.print(f"now: {escape(message)}", style="dim", highlight=False, soft_wrap=True)

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self.view())

    def log(self, message):  # noqa: D102 - printed above the view; no time stamp or source line (console.log's)
        self.console.print(escape(message), highlight=False, soft_wrap=True)

    def stop(self):  # noqa: D102
        if self.live:
            if not self.said:  # nothing said since the last row: what comes next is the scoring
                self.now, self.announced = after_the_rows(self.done, self.total), False
            self.live.update(self.view(), refresh=True)
            self.live.stop()
            self.live = None


LINE_EVERY_S = 5.0  # plain progress lines: no closer together than this


class LineObserver:
    """Logs and CI: a plain line per ~10 % of progress, at most one every `every_s` seconds, and always the last
    one; no redraws."""

    def __init__(self, console: Console, quiet: bool = False, every_s: float = LINE_EVERY_S):
        self.console = console
        self.quiet = quiet
        self.every_s = every_s
        self.agreement = RunningAgreements()
        self.total = 0
        self.every = 1
        self.t0 = time.perf_counter()
        self.printed = (self.t0, 0)  # (when, rows done) of the last progress line
        self.latest: tuple[int, dict[str, Any]] | None = None  # rows done and stats not yet printed

    def start(self, total, labels, meta):  # noqa: D102
        self.total = total
        self.every = max(1, total // 10)
        self.agreement = running_for(list(labels))
        self.printed = (time.perf_counter(), 0)
        arms = f"{labels[0]} against the human labels" if len(labels) == 1 else " vs ".join(labels)
        if not self.quiet:
            self.console.print(f"compare: {total} examples · {arms} · run {meta['run_id']}", highlight=False,
                               soft_wrap=True)

    def row(self, rows, done, stats):  # noqa: D102
        self.agreement.add(rows)
        self.latest = (done, stats)
        if done == self.total or self._due(done):
            self._print_progress()

    def _due(self, done: int) -> bool:
        when, printed = self.printed
        return done - printed >= self.every and time.perf_counter() - when >= self.every_s

    def _print_progress(self) -> None:
        if self.quiet or self.latest is None:
            return
        (done, stats), now = self.latest, time.perf_counter()
        self.console.print(f"[{done}/{self.total}] {self.agreement} · {throughput_text(stats)} · {now - self.t0:.0f}s",
                           highlight=False, markup=False, soft_wrap=True)
        self.printed, self.latest = (now, done), None

    def log(self, message):  # noqa: D102
        if not self.quiet:
            self._print_progress()  # a progress line the throttle held back comes first: lines stay in time order
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def phase(self, message, detail=False):  # noqa: D102
        if not self.quiet and not detail:
            self._print_progress()
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def stop(self):  # noqa: D102
        self._print_progress()  # the last rows' line, when the throttle held it back
