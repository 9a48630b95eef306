"""The run while it runs: a live terminal view (progress, ETA, phase, latest rows) or plain lines for logs and CI.

Both show every arm against the reference: the run hands each finished example's pair rows, one per comparison,
keyed by arm label in arm order (the first is the headline comparison), and each comparison keeps its own
running agreement.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Mapping, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


def side_letter(k: int) -> str:
    """A, B, C, … for the arms in run order (the reference is A)."""
    return chr(ord("A") + k) if k < 26 else str(k + 1)


def recent_table(records: Sequence[Mapping[str, dict[str, Any]]], labels: Sequence[str]) -> Table:
    """The latest examples: each arm's outcome, agreement with the reference per comparison, cache and latency."""
    t = Table(expand=False, title="latest examples", title_justify="left")
    letters = "/".join(side_letter(k) for k in range(len(labels)))
    for col in ("id", "truth", *(f"{side_letter(k)} {label}" for k, label in enumerate(labels)), "agree", "cached",
                f"latency {letters}"):
        t.add_column(escape(col))
    for record in records:
        first = next(iter(record.values()))
        arms = [record.get(label) for label in labels[1:]]
        sides = [(first, "a")] + [(row, "b") for row in arms]
        agree = " ".join("—" if row is None or row["binary_match"] is None else
                         ("[green]✓[/]" if row["binary_match"] else "[red]✗[/]") for row in arms)
        cached = "/".join("—" if row is None else ("y" if row[f"{p}_cached"] else "n") for row, p in sides)
        latency = "/".join("—" if row is None else f"{row[f'{p}_latency_s']:.2f}" for row, p in sides)
        t.add_row(escape(first["example_id"][:10]), str(first["toxicity"]),
                  *("—" if row is None else escape(row[f"{p}_outcome"]) for row, p in sides), agree, cached,
                  latency + "s")
    return t


def throughput_text(stats: dict[str, Any]) -> str:
    parts = []
    for label, s in stats.items():
        eps = f"{s['calls'] / s['seconds']:.2f} ex/s" if s["seconds"] else "cached"
        parts.append(f"{label}: {eps}")
    return " · ".join(parts)


class RunningAgreement:
    """One comparison's binary agreement so far (rows with an error on either side left out)."""

    def __init__(self) -> None:
        self.agree = 0
        self.scored = 0

    def add(self, row: dict[str, Any]) -> None:
        if row["binary_match"] is not None:
            self.scored += 1
            self.agree += bool(row["binary_match"])

    def counts(self) -> str:
        return f"{self.agree}/{self.scored} ({self.agree / self.scored:.1%})" if self.scored else "—"

    def __str__(self) -> str:
        return f"agreement {self.counts()}"


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


def eta_text(done: int, total: int, elapsed_since_first_row: float | None, rows_since_first: int) -> str:
    """Remaining time from the measured per-row rate; '—' until two rows have finished (startup is not a rate)."""
    if done >= total:
        return "ETA 0:00:00"
    if elapsed_since_first_row is None or rows_since_first < 1 or elapsed_since_first_row <= 0:
        return "ETA —"
    seconds = (total - done) * elapsed_since_first_row / rows_since_first
    return "ETA " + time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else "ETA > 1 day"


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
    per-backend throughput, the latest rows and each comparison's running agreement. Updated per finished row."""

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
        self.now = "starting"
        self.total = 0
        self.first_row_at: float | None = None
        self.rows_after_first = 0

    def _view(self) -> Group:
        return Group(self.progress, Text(f"now: {self.now}", style="dim"), recent_table(self.recent, self.labels),
                     Text(str(self.agreement)))

    def start(self, total, labels, meta):  # noqa: D102
        silence_third_party_progress()
        self.labels, self.total = list(labels), total
        self.agreement = RunningAgreements(self.labels)
        self.task = self.progress.add_task("compare", total=total, rate="", eta="ETA —")
        self.live = Live(self._view(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def row(self, rows, done, stats):  # noqa: D102
        now = time.perf_counter()
        if self.first_row_at is None:
            self.first_row_at = now
        else:
            self.rows_after_first += 1
        self.agreement.add(rows)
        self.recent = (self.recent + [rows])[-self.recent_n:]
        eta = eta_text(done, self.total, now - self.first_row_at if self.rows_after_first else None,
                       self.rows_after_first)
        self.progress.update(self.task, completed=done, rate=throughput_text(stats), eta=eta)
        self._refresh()

    def phase(self, message, detail=False):  # noqa: D102
        self.now = message
        self._refresh()

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._view())

    def log(self, message):  # noqa: D102
        self.console.log(escape(message))

    def stop(self):  # noqa: D102
        if self.live:
            self.now = "done"
            self._refresh()
            self.live.stop()
            self.live = None


class LineObserver:
    """Logs and CI: one plain line per ~10 % of progress, no redraws."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.agreement = RunningAgreements()
        self.total = 0
        self.every = 1
        self.t0 = time.perf_counter()

    def start(self, total, labels, meta):  # noqa: D102
        self.total = total
        self.every = max(1, total // 10)
        self.agreement = RunningAgreements(list(labels))
        if not self.quiet:
            self.console.print(f"compare: {total} examples · {' vs '.join(labels)} · run {meta['run_id']}", highlight=False,
                               soft_wrap=True)

    def row(self, rows, done, stats):  # noqa: D102
        self.agreement.add(rows)
        if not self.quiet and (done % self.every == 0 or done == self.total):
            self.console.print(f"[{done}/{self.total}] {self.agreement} · {throughput_text(stats)} · "
                               f"{time.perf_counter() - self.t0:.0f}s", highlight=False, markup=False, soft_wrap=True)

    def log(self, message):  # noqa: D102
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def phase(self, message, detail=False):  # noqa: D102
        if not self.quiet and not detail:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def stop(self):  # noqa: D102
        pass
