"""Results on disk: the atomic writer of a run dir and the readers of every results layout toxcmp knows.

The writer writes the data files (results.parquet, pairs.parquet, summary.json) and any pages its caller hands
it (the run writes report.html this way: this layer never imports a view). Readers accept today's files, the
older two-sided run dirs, and the recorded study's files (through `toxcmp.domain.recordings`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import polars as pl

from toxcmp.analysis.scoring import SIDES
from toxcmp.domain import recordings
from toxcmp.errors import ExitCode, ToxcmpError, UsageError
from toxcmp.results.schema import (
    EXAMPLE_SCHEMA,
    PAIR_SCHEMA,
    PAIRS_FILE,
    PARQUET_META_KEY,
    PARQUET_SCHEMA_KEY,
    PARQUET_SUMMARY_KEY,
    TOKENS_FILE,
    TOKENS_SCHEMA,
    RESULTS_FILE,
    SCHEMA_VERSION,
    SIDE_SCHEMA,
    SUMMARY_FILE,
    TIDY_SCHEMA,
    schema_version_of,
    stamped,
    upgraded,
)


class OutputError(ToxcmpError):
    exit_code = ExitCode.BACKEND


def frame_of(rows: Sequence[dict[str, Any]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


def token_rows(tidy: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """tokens.parquet: one row per (example, arm, repeat, position) of every answer that came with log p."""
    rows = []
    for r in tidy:
        for position, t in enumerate(r.get("token_logprobs") or []):
            top = t.get("top") or []
            rows.append({"example_id": r["example_id"], "arm": r["arm"], "repeat": int(r.get("repeat") or 0),
                         "position": position, "part": t.get("part"), "token": t.get("token"), "token_id": t.get("id"),
                         "logprob": t.get("logprob"), "top_tokens": [x[0] for x in top],
                         "top_logprobs": [float(x[1]) for x in top], "local_logprob": t.get("local_logprob"),
                         "local_top1": t.get("local_top1"), "top_overlap": t.get("top_overlap")})
    return rows


def _atomic(final: Path, write: Callable[[Path], Any]) -> None:
    """Write to a temp file beside `final`, then rename: a crash never leaves a half-written file behind."""
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {final} ({exc.strerror or exc})",
                          "free space or fix permissions, then rerun the same command: every response is in the "
                          "cache, so nothing is recomputed") from None


def write_text(path: Path, text: str) -> None:
    """One text file, atomically."""
    _atomic(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


def write_outputs(run_dir: Path, tidy: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
                  summary: dict[str, Any], pages: Mapping[str, Callable[[], str]] | None = None) -> None:
    """results.parquet, pairs.parquet and summary.json, each atomically, stamped with this schema version (in
    summary.json and in each parquet file's metadata); then each of `pages` (file name → its text, built after
    the data files are on disk)."""
    summary = stamped(summary)
    meta = summary.get("metadata", {})
    parquet_meta = {PARQUET_META_KEY: json.dumps(meta, default=str),
                    PARQUET_SUMMARY_KEY: json.dumps(summary, default=str),
                    PARQUET_SCHEMA_KEY: str(SCHEMA_VERSION)}
    results, pair_frame = frame_of(tidy, TIDY_SCHEMA), frame_of(pairs, PAIR_SCHEMA)
    targets: list[tuple[str, Callable[[Path], Any]]] = [
        (RESULTS_FILE, lambda p: results.write_parquet(p, metadata=parquet_meta)),
        (PAIRS_FILE, lambda p: pair_frame.write_parquet(p, metadata=parquet_meta)),
        (SUMMARY_FILE, lambda p: p.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n",
                                              encoding="utf-8")),
    ]
    tokens = token_rows(tidy)
    if tokens:  # an arm sent token log-probabilities
        frame = frame_of(tokens, TOKENS_SCHEMA)
        targets.append((TOKENS_FILE, lambda p: frame.write_parquet(p, metadata=parquet_meta)))
    for name, build in (pages or {}).items():
        targets.append((name, lambda p, build=build: p.write_text(build(), encoding="utf-8")))
    for name, write in targets:
        _atomic(run_dir / name, write)


# -- reading results back ------------------------------------------------------------------------------------------

class Recorded(NamedTuple):
    rows: list[dict[str, Any]]  # tidy: one per example, arm and repeat
    meta: dict[str, Any]  # the run's provenance (the study's, as far as its file names tell)
    layout: str  # "toxcmp", "toxcmp-two-sided", "study-pair" or "study-singles"
    schema_version: int  # of the toxcmp file read (1 when it says none, and for study files)


def parquet_meta(path: Path) -> tuple[dict[str, Any], int]:
    """A toxcmp parquet file's provenance and schema version."""
    raw = pl.read_parquet_metadata(path)
    return json.loads(raw.get(PARQUET_META_KEY, "{}")), schema_version_of(parquet_meta=raw, source=path)


def read_results(paths: Sequence[Path]) -> Recorded:
    """Tidy rows + metadata + layout + schema version from a run dir or parquet file(s). Older two-sided run dirs
    and files without a schema version (version 1) still read."""
    if not paths:
        raise UsageError("nothing to rescore", "pass a run dir, a results.parquet, or two study parquets")
    files = [p / RESULTS_FILE if p.is_dir() else p for p in paths]
    for f in files:
        if not f.is_file():
            raise UsageError(f"no results at {f}", "pass a run dir (with results.parquet) or a parquet file")
    frames = []
    for f in files:
        try:
            frames.append(pl.read_parquet(f))
        except Exception as exc:  # noqa: BLE001 - any unreadable parquet gets the same message
            raise UsageError(f"cannot read {f} as parquet: {str(exc).splitlines()[0][:160]}", "check the file") from None
    columns = set(frames[0].columns)
    if len(files) == 1 and {"arm", "content"} <= columns:
        meta, version = parquet_meta(files[0])
        return Recorded(frames[0].to_dicts(), meta, "toxcmp", version)
    if len(files) == 1 and "a_content" in columns:
        meta, version = parquet_meta(files[0])
        labels = [b.get("label") for b in meta.get("backends", [])] or ["a", "b"]
        return Recorded(tidy_from_pairs(frames[0].to_dicts(), labels), meta, "toxcmp-two-sided", version)
    if len(files) == 1 and recordings.is_pair(columns, scored=True):
        labels = list(recordings.PAIR_SIDES)
        return Recorded(tidy_from_pairs(_study_pair(frames[0]), labels), recordings.study_meta(files, labels),
                        "study-pair", 1)
    if len(files) == 2 and all(recordings.is_single(f.columns, scored=True) for f in frames):
        labels = [recordings.single_label(f, fr) for f, fr in zip(files, frames)]
        if labels[0] == labels[1]:  # one model from two providers: the files tell the arms apart
            labels = [f.stem for f in files] if files[0].stem != files[1].stem else [f"{f.stem}-{i}" for i, f in enumerate(files)]
        return Recorded(tidy_from_pairs(_study_singles(frames, labels), labels), recordings.study_meta(files, labels),
                        "study-singles", 1)
    raise UsageError(f"unrecognised results layout in {', '.join(map(str, files))}",
                     "pass a toxcmp run dir, a study backend_comparison parquet, or two study api_* parquets")


def tidy_from_pairs(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Two-sided rows → tidy rows (the reference side once per example)."""
    out, seen = [], set()
    for row in rows:
        for p, label in zip(SIDES, labels):
            arm = row.get(f"{p}_backend") or label
            key = (row["example_id"], arm)
            if key in seen:
                continue
            seen.add(key)
            tidy = {k: row.get(k) for k in EXAMPLE_SCHEMA} | {"arm": arm, "repeat": 0}
            tidy |= {k: row.get(f"{p}_{k}") for k in SIDE_SCHEMA if k != "backend"}
            out.append(tidy)
    return out


def _blank_side(p: str) -> dict[str, Any]:
    return {f"{p}_{k}": None for k in ("raw", "served_by", "prompt_hash", "finish_reason", "error")} | {
        f"{p}_latency_s": 0.0, f"{p}_cached": True, f"{p}_retries": 0}


def _side(p: str, answer: recordings.StudyAnswer, backend: str | None) -> dict[str, Any]:
    return _blank_side(p) | {f"{p}_content": answer.content, f"{p}_reasoning": answer.reasoning,
                             f"{p}_raw": answer.raw or None, f"{p}_reasoning_source": answer.reasoning_source,
                             f"{p}_served_by": answer.served_by, f"{p}_backend": backend}


def _label(value: Any) -> int | None:
    """A study file's human label as 0/1; None where the row has none (null, NaN, an empty cell)."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        return None
    return int(float(value)) if isinstance(value, str) else int(value)


def _study_pair(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for a, b in zip(*(recordings.read_pair(frame, side) for side in recordings.PAIR_SIDES)):
        row = {"example_id": a.conv_id or a.text[:32], "text": a.text, "toxicity": _label(a.toxicity),
               "jailbreaking": None, "weight": 1.0}
        for p, answer in zip(SIDES, (a, b)):
            row |= _side(p, answer, answer.served_by)
        rows.append(row)
    return rows


def _study_singles(frames: Sequence[pl.DataFrame], labels: Sequence[str]) -> list[dict[str, Any]]:
    keyed = [{a.conv_id: a for a in recordings.read_single(f)} for f in frames]
    rows = []
    for conv_id, first in keyed[0].items():
        other = keyed[1].get(conv_id)
        if other is None:
            continue
        row = {"example_id": conv_id, "text": first.text, "toxicity": _label(first.toxicity),
               "jailbreaking": first.jailbreaking, "weight": first.weight}
        for p, answer, label in zip(SIDES, (first, other), labels):
            row |= _side(p, answer, label)
        rows.append(row)
    return rows


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run dir's summary.json in today's shape (see `schema.upgraded`)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "rescore the run to rebuild it") from None
    return upgraded(summary, source=path)


def read_run(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A run dir's pair rows (pairs.parquet; an older two-sided run: its results.parquet) and its summary."""
    run_dir = Path(run_dir)
    source = run_dir / PAIRS_FILE if (run_dir / PAIRS_FILE).is_file() else run_dir / RESULTS_FILE
    try:
        rows = pl.read_parquet(source).to_dicts()
    except Exception as exc:  # noqa: BLE001 - missing or unreadable: the same one line
        raise UsageError(f"{run_dir} is not a toxcmp run dir ({type(exc).__name__})",
                         "pass a dir written by toxcmp compare or rescore") from None
    if not rows or "a_content" not in rows[0]:
        raise UsageError(f"{run_dir} is not a toxcmp run dir", "pass a dir written by toxcmp compare or rescore")
    return rows, read_summary(run_dir)
