"""What a run records about itself: versions, commit, arms, invocations."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from toxcmp import __version__
from toxcmp.domain.prompting import check_render_date
from toxcmp.errors import UsageError
from toxcmp.run.arms import Arm
from toxcmp.run.config import CompareConfig


def _previous_metadata(run_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def previous_invocations(run_dir: Path) -> list[dict[str, Any]]:
    """Earlier invocations of the same run (a resume keeps the history: when it started, what each one did)."""
    meta = _previous_metadata(run_dir)
    if meta.get("invocations"):
        return list(meta["invocations"])
    if meta.get("started_at"):
        return [{"started_at": meta["started_at"], "elapsed_s": meta.get("elapsed_s") or 0.0,
                 "status": meta.get("status"), "calls": {}, "command": None}]
    return []


def recorded_render_date(run_dir: Path) -> str | None:
    """The render date an earlier invocation of this run recorded; None for a new run (or one from before dates
    were pinned)."""
    date = _previous_metadata(run_dir).get("render_date")
    if not isinstance(date, str):
        return None
    try:
        return check_render_date(date)
    except UsageError:
        return None  # a hand-edited summary: the run starts over at the wanted date rather than failing


def settle_render_date(wanted: str | None, run_dir: Path, today: str) -> str:
    """The day this run's templates render: the one asked for, else the one the run dir recorded (a resume, even on
    another day, renders the same prompts, so its cache keys match), else `today` (the run's start, UTC).

    The date is part of every request (prompt hash, cache key) but not of the run id: the run id names what is
    compared, and must map a rerun of the same command on a later day to the same dir, where the recorded date is
    found. Asking for another date than the dir recorded would re-answer every example under the old id, so it is
    refused: a run at another date is another run (`--run-id`)."""
    recorded = recorded_render_date(run_dir)
    if wanted and recorded and wanted != recorded:
        raise UsageError(f"run {run_dir.name} renders its prompts at {recorded} (recorded); --render-date {wanted} "
                         "would answer every example again",
                         f"drop --render-date to resume it, or pass --run-id for a new run at {wanted}")
    return wanted or recorded or today


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _git_commit() -> str | None:
    import subprocess

    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "huggingface_hub", "polars", "datasets", "rapidfuzz", "diskcache"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_metadata(cfg: CompareConfig, arms: Sequence[Arm], engines, sample_meta, run_id,
                 render_date: str | None = None) -> dict[str, Any]:
    """Provenance; never contains the token (options declared secret are not recorded). The reference arm comes first."""
    spec, policy = arms[0].model, arms[0].policy
    return {
        "toxcmp_version": __version__, "git_commit": _git_commit(), "run_id": run_id, "started_at": _now(),
        "backends": [{"label": a.label, "spec": a.spec.text, "name": a.spec.name, "options": dict(a.spec.options),
                      "settings": a.options.recorded(), "endpoint": e.endpoint} for a, e in zip(arms, engines)],
        "model": {"name": spec.name, "model_id": spec.model_id, "revision": spec.revision, "harmony": spec.harmony},
        "policy": {"name": policy.name, "sha256": policy.sha256},
        "generation": cfg.generation.to_dict(), "sample_seed": cfg.seed, "dataset": sample_meta, "command": cfg.command,
        "arms": [a.describe() for a in arms], "reference": arms[0].label, "repeats": cfg.repeats, "margin": cfg.margin,
        "threshold": cfg.threshold, "unparsed_as": cfg.unparsed_as, "libraries": library_versions(),
        "render_date": render_date,  # what each local template's clock read; a server renders its own
    }
