"""Re-parse recorded outputs and recompute every statistic; no model is called."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from toxcmp import __version__
from toxcmp.analysis.arms import (
    DEFAULT_MARGIN,
    assemble,
)
from toxcmp.analysis.scoring import UNPARSED_AS
from toxcmp.analysis.verdict import DEFAULT_MIN_LABELLED
from toxcmp.domain.policies import Policy, load_policy
from toxcmp.errors import UsageError
from toxcmp.run.arms import _safe_name, prepare_run_dir
from toxcmp.run.config import DEFAULT_OUTPUT_DIR
from toxcmp.run.orchestrate import finalize_summary, write_run_files
from toxcmp.run.provenance import _now


@dataclass
class RescoreResult:
    rows: list[dict[str, Any]]  # the headline comparison's pair rows (see RunResult)
    summary: dict[str, Any]
    layout: str
    run_dir: Path | None
    comparisons: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # arm label → its pair rows
    source_schema_version: int = 1  # of the rescored files (1: written before versions, or a study file)


def rescore(paths: Sequence[Path], policy: str | None = None, unparsed_as: str = "none", threshold: float = 0.95,
            output_dir: Path | None = DEFAULT_OUTPUT_DIR, run_id: str | None = None,
            min_labelled: float = DEFAULT_MIN_LABELLED, margin: float | None = None) -> RescoreResult:
    """Re-parse recorded outputs and recompute every statistic; no model is called. `output_dir=None`: no files."""
    from toxcmp.analysis.scoring import verdict_fields
    from toxcmp.results.io import read_results

    if unparsed_as not in UNPARSED_AS:
        raise UsageError(f"--unparsed-as must be one of {', '.join(UNPARSED_AS)}", "the study's way is 0")
    tidy, meta, layout, source_version = read_results([Path(p) for p in paths])
    arms_meta = recorded_arms(tidy, meta)
    notes = []
    sides: dict[str, tuple[Policy, bool | None]] = {}
    for arm in arms_meta:
        name = policy or arm.get("policy")
        if not name:
            raise UsageError("cannot tell which policy these outputs answer", "pass --policy NAME")
        policy_obj = load_policy(name)
        if arm.get("policy_sha256") and arm["policy_sha256"] != policy_obj.sha256 and name == arm.get("policy"):
            notes.append(f"policy {policy_obj.name} changed since the run "
                         f"(sha256 {arm['policy_sha256'][:12]} → {policy_obj.sha256[:12]})")
        arm["policy"], arm["policy_sha256"] = policy_obj.name, policy_obj.sha256
        sides[arm["label"]] = (policy_obj, arm.get("harmony"))
    for row in tidy:  # re-parse every answer with today's parser and the (possibly new) policy
        row.update(verdict_fields(row, *sides[row["arm"]], unparsed_as))
    labels = [a["label"] for a in arms_meta]
    reference = meta.get("reference") if meta.get("reference") in labels else labels[0]
    labels = [reference] + [label for label in labels if label != reference]
    assembled = assemble(tidy, labels, reference, sides, unparsed_as)
    carry_margins(Path(paths[0]), assembled)
    carry_divergences(Path(paths[0]), assembled)
    measured = carry_tokens(Path(paths[0]), tidy)  # token parity and label probabilities: a model's, kept
    first_policy = sides[reference][0]
    meta = dict(meta, arms=arms_meta, rescored_at=_now(), rescored_with=__version__, rescore_layout=layout,
                rescore_source_schema_version=source_version,
                rescore_notes=list(dict.fromkeys(notes)),
                policy=dict(meta.get("policy") or {}, name=first_policy.name, rescored_sha256=first_policy.sha256))
    margin = margin if margin is not None else float(meta.get("margin") or DEFAULT_MARGIN)
    summary = finalize_summary(assembled, tidy, threshold, meta, unparsed_as, min_labelled, margin,
                               int(meta.get("repeats") or 1))
    summary.update(measured)
    pairs = [row for rows in assembled.comparisons.values() for row in rows]
    run_dir = None
    if output_dir is not None:
        source = Path(paths[0])
        default_id = (meta.get("run_id") or source.stem) + "-rescored"
        run_dir = prepare_run_dir(Path(output_dir), run_id or _safe_name(default_id)[:128])
        write_run_files(run_dir, tidy, pairs, summary)
    headline = assembled.comparisons[labels[1]] if len(labels) > 1 else assembled.first[labels[0]]  # one arm
    return RescoreResult(headline, summary, layout, run_dir, assembled.comparisons,
                         source_version)


def carry_tokens(source: Path, tidy) -> dict:
    """Token log-probabilities came off the wire and were scored by a model, not parsed: a rescore puts the run's
    tokens.parquet back on its rows (so the rescored dir has it too) and keeps the run's token parity and label
    probabilities (summary keys, returned)."""
    import json

    import polars as pl

    from toxcmp.results.schema import SUMMARY_FILE, TOKENS_FILE

    run_dir = source if source.is_dir() else source.parent
    if not (run_dir / TOKENS_FILE).is_file():
        return {}
    by_row: dict[tuple, list] = {}
    for t in pl.read_parquet(run_dir / TOKENS_FILE).sort("position").iter_rows(named=True):
        by_row.setdefault((t["example_id"], t["arm"], t["repeat"]), []).append(
            {"part": t["part"], "token": t["token"], "logprob": t["logprob"], "id": t.get("token_id"),
             "top": [[tok, lp] for tok, lp in zip(t["top_tokens"] or [], t["top_logprobs"] or [])],
             "local_logprob": t.get("local_logprob"), "local_top1": t.get("local_top1"),
             "top_overlap": t.get("top_overlap")})
    for row in tidy:
        tokens = by_row.get((row["example_id"], row["arm"], int(row.get("repeat") or 0)))
        if tokens is not None:
            row["token_logprobs"] = tokens
    try:
        recorded = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: recorded[k] for k in ("token_parity", "label_probs") if recorded.get(k)}


def carry_margins(source: Path, assembled) -> None:
    """Local-model margins were measured by a model, not parsed from text: a rescore keeps the recorded ones for
    the label disagreements that are still label disagreements."""
    import polars as pl

    from toxcmp.results.schema import PAIRS_FILE, RESULTS_FILE

    run_dir = source if source.is_dir() else source.parent
    candidates = [run_dir / PAIRS_FILE, run_dir / RESULTS_FILE]
    path = next((p for p in candidates if p.is_file() and "margin_nats" in pl.read_parquet_schema(p)), None)
    if path is None:
        return
    frame = pl.read_parquet(path).filter(pl.col("margin_nats").is_not_null())
    arm_column = "arm" if "arm" in frame.columns else "b_backend"
    if arm_column not in frame.columns:
        return
    found = {(r["example_id"], r[arm_column]): (r["margin_nats"], r["margin_kind"]) for r in frame.iter_rows(named=True)}
    for label, rows in assembled.comparisons.items():
        for row in rows:
            margin = found.get((row["example_id"], label))
            if margin and row["cause"] in ("label_flip", "fine_grain_only"):
                row["margin_nats"], row["margin_kind"] = margin


def carry_divergences(source: Path, assembled) -> None:
    """Token divergences were scored by a model: a rescore keeps them for the pairs whose raw texts still part at
    the same character (rescore never changes raw text, so that is every one)."""
    import polars as pl

    from toxcmp.analysis.divergence import TOKEN_COLUMNS
    from toxcmp.results.schema import PAIRS_FILE

    path = (source if source.is_dir() else source.parent) / PAIRS_FILE
    if not path.is_file() or "divergence_kind" not in pl.read_parquet_schema(path):
        return
    frame = pl.read_parquet(path).filter(pl.col("divergence_kind").is_not_null())
    found = {(r["example_id"], r["arm"]): r for r in frame.iter_rows(named=True)}
    for label, rows in assembled.comparisons.items():
        for row in rows:
            old = found.get((row["example_id"], label))
            if old and old["diverge_char"] == row["diverge_char"]:
                row.update({k: old[k] for k in TOKEN_COLUMNS})


def recorded_arms(tidy: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The arms of recorded rows, in the run's order: from the run's provenance, else from the rows themselves
    (older two-sided runs and the study files), with the run's model and policy."""
    present = list(dict.fromkeys(row["arm"] for row in tidy))
    known = {a.get("label"): dict(a) for a in meta.get("arms") or [] if a.get("policy")}
    model, policy = meta.get("model") or {}, meta.get("policy") or {}
    out = []
    for label in present:
        arm = known.get(label) or {"label": label, "model": model.get("name"), "policy": policy.get("name"),
                                   "policy_sha256": policy.get("sha256")}
        arm.setdefault("harmony", model.get("harmony"))
        out.append(arm)
    return out


def next_to_source(source: Path) -> Path:
    """Where a rescore goes by default: beside the run dir it rescored (or beside the recorded file)."""
    source = Path(source)
    if source.is_dir():
        return source.resolve().parent
    if source.name == "results.parquet":
        return source.resolve().parent.parent
    return source.resolve().parent
