"""The run dirs under an output dir, newest first, as their summary.json files describe them (`toxcmp runs`,
`toxcmp view` with no argument). A dir whose summary cannot be read is listed as such, never skipped silently."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toxcmp.results.schema import SUMMARY_FILE


@dataclass(frozen=True)
class RunEntry:
    run_dir: Path
    run_id: str
    verdict: str | None
    status: str | None
    n: int | None
    planned: int | None  # rows the run set out to answer (its sample), when recorded
    arms: tuple[str, ...]
    model: str | None
    policy: str | None
    finished_at: str | None  # as recorded (UTC, ISO 8601); None: unreadable, or the run never finished
    problem: str | None = None  # why the summary could not be read

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "run_dir": str(self.run_dir), "arms": list(self.arms)}


def _entry(run_dir: Path) -> RunEntry:
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        meta = summary.get("metadata") or {}
    except (OSError, ValueError, AttributeError) as exc:
        return RunEntry(run_dir, run_dir.name, None, None, None, None, (), None, None, None,
                        f"summary.json unreadable: {type(exc).__name__}")
    arms = tuple(a.get("label") for a in summary.get("arms") or meta.get("backends") or [] if isinstance(a, dict))
    sampled = (meta.get("dataset") or {}).get("sampled")
    return RunEntry(run_dir, meta.get("run_id") or run_dir.name, summary.get("verdict"),
                    summary.get("status") or meta.get("status"), summary.get("n"),
                    sampled if isinstance(sampled, int) else None, tuple(a for a in arms if a),
                    (meta.get("model") or {}).get("name") or (meta.get("model") or {}).get("model_id"),
                    (meta.get("policy") or {}).get("name"), meta.get("finished_at"))


def list_runs(output_dir: Path) -> list[RunEntry]:
    """Every dir directly under `output_dir` that holds a summary.json, the most recently finished first."""
    if not output_dir.is_dir():
        return []
    found = [_entry(d) for d in output_dir.iterdir() if d.is_dir() and (d / SUMMARY_FILE).exists()]
    return sorted(found, key=lambda e: (e.finished_at or "", (e.run_dir / SUMMARY_FILE).stat().st_mtime),
                  reverse=True)


def latest_run(output_dir: Path) -> Path | None:
    runs = [r for r in list_runs(output_dir) if r.problem is None]
    return runs[0].run_dir if runs else None
