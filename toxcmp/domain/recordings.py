"""The recorded study's parquet layouts, read in one place: the `recorded` backend replays their answers and
`rescore` re-scores them.

- a **pair** file (`backend_comparison_*.parquet`): one row per example with both sides, `api_*` and `local_*`
  (`*_response`, `*_reasoning`), the text and `ground_truth`;
- a **single** file (`api_*.parquet`): one backend's answers, `raw_model_response`, `model_reasoning`,
  `user_input`, `toxicity`, `conv_id`, and which model answered (`model_used`, `model_name`).

The readers take a polars frame (this module imports nothing heavy) and give one `StudyAnswer` per row, in file
order, with the columns as recorded: the callers decide what a missing id or label means. A response column is
read the way the live backends read a server's content (`toxcmp.domain.parsing.read_answer`): reasoning that
leaked into it (Harmony tokens, the collapsed form, `<think>`/`<reasoning>` tags) is split out, and the column
as recorded is then kept as the raw text; the reasoning column is reasoning sent beside it (`field`: the study
did not record the field's name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from toxcmp.domain.parsing import read_answer

if TYPE_CHECKING:
    import polars as pl

PAIR_SIDES = ("api", "local")  # the two sides of a pair file, in its column prefixes
PAIR_ANSWER_COLUMNS = {"api_response", "local_response"}  # enough to replay a side
PAIR_SCORED_COLUMNS = PAIR_ANSWER_COLUMNS | {"ground_truth"}  # enough to re-score both sides
SINGLE_ANSWER_COLUMNS = {"raw_model_response", "user_input"}  # enough to replay the file's answers
SINGLE_SCORED_COLUMNS = {"raw_model_response", "model_reasoning", "toxicity"}  # enough to re-score them


@dataclass(frozen=True)
class StudyAnswer:
    """One recorded answer and the example it answers, as the study file has them."""

    conv_id: str | None  # the example id; None when the file has no conv_id column or value
    text: str
    toxicity: Any  # the human label as recorded (None when the file has none)
    jailbreaking: Any
    weight: float  # the sample weight (1.0 when unrecorded)
    content: str  # the final answer ("" when empty)
    reasoning: str
    served_by: str | None  # the side's name (pair file) or the model that answered (single file)
    model_name: str | None  # single files: the model's name, the arm's label by default
    raw: str = ""  # the response column as recorded when reasoning had to be split out of it; else "" (final only)
    reasoning_source: str = "none"  # where the reasoning came from (toxcmp.domain.parsing.REASONING_SOURCES)


def _answer(response: str | None, reasoning: str | None) -> dict[str, Any]:
    """A response column and its reasoning column → final answer, reasoning, raw text and reasoning source."""
    recorded = response or ""
    parts = read_answer(recorded, reasoning or "")
    return {"content": parts.content if parts.format != "plain" else recorded, "reasoning": parts.reasoning,
            "raw": recorded if parts.format != "plain" else "", "reasoning_source": parts.source}


def is_pair(columns: Any, scored: bool = False) -> bool:
    return (PAIR_SCORED_COLUMNS if scored else PAIR_ANSWER_COLUMNS) <= set(columns)


def is_single(columns: Any, scored: bool = False) -> bool:
    return (SINGLE_SCORED_COLUMNS if scored else SINGLE_ANSWER_COLUMNS) <= set(columns)


def read_pair(frame: pl.DataFrame, side: str) -> list[StudyAnswer]:
    """One side (`api` or `local`) of a pair file."""
    return [StudyAnswer(conv_id=r.get("conv_id"), text=r["text"], toxicity=r.get("ground_truth"), jailbreaking=None,
                        weight=1.0, served_by=side, model_name=None,
                        **_answer(r[f"{side}_response"], r.get(f"{side}_reasoning")))
            for r in frame.iter_rows(named=True)]


def read_single(frame: pl.DataFrame) -> list[StudyAnswer]:
    """Every answer of a single-backend file."""
    return [StudyAnswer(conv_id=r.get("conv_id"), text=r["user_input"], toxicity=r.get("toxicity"),
                        jailbreaking=r.get("jailbreaking"), weight=float(r.get("sample_weight") or 1.0),
                        served_by=r.get("model_used"), model_name=r.get("model_name"),
                        **_answer(r["raw_model_response"], r.get("model_reasoning")))
            for r in frame.iter_rows(named=True)]


def single_label(path: Path, frame: pl.DataFrame) -> str:
    """A single file's arm label: the model it names, else the file's stem."""
    if "model_name" in frame.columns and frame.height:
        return str(frame["model_name"][0])
    return path.stem


def study_meta(files: Sequence[Path], labels: Sequence[str]) -> dict[str, Any]:
    """Provenance of recorded study files, as far as their names tell (policy and model)."""
    match = re.search(r"(toxic_chat_claude_1|toxic_simple)", files[0].name)
    model = re.search(r"(gpt-oss(?:-safeguard)?-\d+b)", files[0].name)
    return {"model": {"name": model.group(1) if model else None, "harmony": True},
            "backends": [{"label": label, "name": label} for label in labels],
            "policy": {"name": match.group(1) if match else None},
            "source": [str(f) for f in files], "recorded_study": True}
