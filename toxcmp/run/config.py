"""The one config object of a comparison run, the observer protocol and the run's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from toxcmp.analysis.arms import (
    DEFAULT_MARGIN,
)
from toxcmp.analysis.verdict import DEFAULT_MIN_LABELLED, EXIT_CODES
from toxcmp.backends import BackendConfig
from toxcmp.config import GenerationConfig
from toxcmp.domain.data import (
    DEFAULT_DATASET,
)
from toxcmp.errors import ExitCode

DEFAULT_OUTPUT_DIR = Path("outputs") / "backend_comparison"


@dataclass(frozen=True)
class CompareConfig:
    """Everything a comparison run depends on, with explicit defaults."""

    policy: str = "toxic_simple"
    model: str = "smollm2-135m"
    revision: str | None = None
    dataset: str = DEFAULT_DATASET
    version: str | None = None  # Hub config; None: toxicchat0124
    split: str | None = None  # Hub split; None: test
    sample_size: int | None = None
    limit: int | None = None  # the first N rows, no sampling (part of the run id)
    text_column: str | None = None  # the dataset's text column (None: user_input, else text)
    label_column: str | None = None  # its 0/1 label column (None: toxicity, else ground_truth; "none": no labels)
    seed: int = 0
    human_only: bool = False
    stratify: bool = False
    backends: str = "api,local"
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    threshold: float = 0.95
    min_labelled: float = DEFAULT_MIN_LABELLED
    output_dir: Path = DEFAULT_OUTPUT_DIR
    run_id: str | None = None
    chunk_size: int = 16
    unparsed_as: str = "none"
    margins: bool = True
    use_cache: bool = True
    command: str | None = None  # the command line, recorded in provenance
    concurrent_sides: bool = True  # run the sides at once when they do not compete for the same cores
    reference: str | None = None  # the arm the others are judged against (a label or spec); None: the first
    repeats: int = 1  # answers per arm and example: ≥ 2 measures each arm's noise floor
    margin: float = DEFAULT_MARGIN  # equivalence margin on disagreement above the floor
    render_date: str | None = None  # YYYY-MM-DD the templates' clock reads; None: the recorded one, else today (UTC)


class Observer(Protocol):
    """What a run tells while it runs. `start` gets every arm's label (the reference first); `row` gets each
    finished example's pair rows, one per comparison (every other arm against the reference), by arm label in
    arm order: the first is the headline comparison."""

    def start(self, total: int, labels: Sequence[str], meta: dict[str, Any]) -> None: ...
    def row(self, rows: Mapping[str, dict[str, Any]], done: int, stats: dict[str, Any]) -> None: ...
    def log(self, message: str) -> None: ...
    def phase(self, message: str, detail: bool = False) -> None: ...  # detail: step status, live view only
    def stop(self) -> None: ...


class SilentObserver:
    def start(self, total, labels, meta):  # noqa: D102
        pass

    def row(self, rows, done, stats):  # noqa: D102
        pass

    def log(self, message):  # noqa: D102
        pass

    def phase(self, message, detail=False):  # noqa: D102
        pass

    def stop(self):  # noqa: D102
        pass


@dataclass
class RunResult:
    """A finished (or interrupted) run. `rows` is the headline comparison, the one `summary["headline"]` names
    and the summary's top level describes: the first arm after the reference, in the two-sided `a_*`/`b_*`
    shape. `comparisons` holds every comparison's pair rows by arm label (the headline's first)."""

    rows: list[dict[str, Any]]  # the headline comparison's pair rows (the first arm against the reference)
    summary: dict[str, Any]
    run_dir: Path
    status: str  # "complete", "interrupted", "failed"
    reason: str | None = None
    tidy: list[dict[str, Any]] = field(default_factory=list)  # one row per (example, arm, repeat)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # every arm against the reference
    comparisons: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # arm label → its pair rows

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return ExitCode.INTERRUPTED
        if self.status == "failed" or self.summary.get("n_errors"):
            return ExitCode.BACKEND
        return EXIT_CODES[self.summary["verdict"]]
