"""After the rows, the run scores them (prompt tokens, margins, divergences, the summary) and writes its files: the
observer hears that it is scoring, and is stopped only once the files are on disk — a live view never says the
run is over while it is still working (issue 23)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from toxcmp.report.live import LineObserver, LiveObserver
from toxcmp.run.config import CompareConfig, SilentObserver
from toxcmp.run.orchestrate import run_compare

from tests.run.test_compare import TEXTS, dataset, plugin_backends  # noqa: F401 - fixtures

RUN_FILES = ("results.parquet", "pairs.parquet", "summary.json", "report.html")


class Events(SilentObserver):
    """Every call, in order; at `stop`, which of the run's files exist."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.events: list[tuple[str, str]] = []
        self.files_at_stop: set[str] = set()

    def row(self, rows, done, stats):  # noqa: D102
        self.events.append(("row", str(done)))

    def phase(self, message, detail=False):  # noqa: D102
        self.events.append(("phase", message))

    def stop(self):  # noqa: D102
        self.events.append(("stop", ""))
        self.files_at_stop = {p.name for p in self.output_dir.glob("*/*") if p.name in RUN_FILES}


def test_the_observer_hears_the_scoring_and_stops_after_the_files(dataset, tmp_path):
    out = tmp_path / "out"
    observer = Events(out)
    result = run_compare(CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=out), observer)
    kinds = [kind for kind, _ in observer.events]
    last_row = max(i for i, kind in enumerate(kinds) if kind == "row")
    n = len(TEXTS)
    scoring = observer.events.index(("phase", f"all {n} rows answered; scoring and writing the results"))
    written = observer.events.index(("phase", f"all {n} rows answered; scored, results written to {result.run_dir}"))
    assert last_row < scoring < written < kinds.index("stop") == len(kinds) - 1
    assert observer.files_at_stop == set(RUN_FILES)  # stopped only once everything is written


def test_the_live_view_says_scoring_while_it_scores_and_written_when_done(dataset, tmp_path):
    buffer = io.StringIO()
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path / "out")
    result = run_compare(cfg, LiveObserver(Console(file=buffer, force_terminal=True, width=400)))
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", buffer.getvalue())
    nows = [m.strip() for m in re.findall(r"now: ([^\n]*)", screen)]
    n = len(TEXTS)
    scoring = nows.index(f"all {n} rows answered; scoring and writing the results")  # drawn, however short
    assert nows[-1] == f"all {n} rows answered; scored, results written to {result.run_dir}"
    assert scoring < len(nows) - 1


def test_plain_lines_keep_the_held_back_progress_line_before_later_lines():
    """Off a terminal, a progress line the throttle held back prints before the next line (an interruption, a
    scoring step), not after it at the end."""
    from tests.report.test_live_truth import _record, _stats

    buffer = io.StringIO()
    observer = LineObserver(Console(file=buffer, force_terminal=False, width=200), every_s=60.0)
    observer.start(10, ["ref", "arm"], {"run_id": "test"})
    for done in range(1, 5):
        observer.row(_record(done), done, _stats(done))
    observer.log("interrupted after 4 of 10 examples; writing the finished rows")
    observer.stop()
    lines = buffer.getvalue().splitlines()[1:]
    assert [line.split(" ·")[0] for line in lines] == ["[4/10] agreement 4/4 (100.0%)",
                                                       "interrupted after 4 of 10 examples; writing the finished rows"]


def test_margin_scoring_announces_itself(monkeypatch):
    from toxcmp.run import local_scoring

    said: list[tuple[str, bool]] = []

    class Told(SilentObserver):
        def phase(self, message, detail=False):  # noqa: D102
            said.append((message, detail))

    monkeypatch.setattr(local_scoring, "local_side", lambda pair: 1)  # side b holds the local model
    monkeypatch.setattr(local_scoring, "with_local_model", lambda todo, arm, requests, examples: iter(()))
    rows = [{"example_id": "e1", "cause": "label_flip", "margin_kind": None},
            {"example_id": "e2", "cause": None, "margin_kind": None},
            {"example_id": "e3", "cause": "fine_grain_only", "margin_kind": None}]
    local_scoring.add_margins(rows, (None, None), [], [], [], Told())
    assert said == [("scoring 2 label disagreement(s) with the local model", True)]
