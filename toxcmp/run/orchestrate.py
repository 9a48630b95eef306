"""The run: sample → every arm, `repeats` times (cache in front) → tidy rows → pairs → summary → files.

Every arm answers at its own pace (`toxcmp.run.scheduler`); a row is complete the moment its last slot answers, so
the live view streams and an interrupted run still writes every finished example. Each response is cached the
moment it arrives, so rerunning the same command resumes at zero cost. One arm is an evaluation: its answers
against the human labels (`toxcmp.analysis.arms.evaluate_arm`).

Once the rows are in, the observer hears `scoring_phase` (the live view stays up, saying so, while prompt tokens,
margins and divergences are counted and the summary and files are written) and is stopped only after the files
are on disk."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from toxcmp import phases
from toxcmp.analysis.arms import (
    DEFAULT_MARGIN,
    assemble,
    pair_row,
    summarize_arms,
    tidy_row,
)
from toxcmp.analysis.logprobs import logprob_summary
from toxcmp.analysis.scoring import EVALUATION, UNPARSED_AS
from toxcmp.analysis.verdict import DEFAULT_MIN_LABELLED
from toxcmp.backends import AnswersKnownRows, Backend, Preflight, ReportsReliability, get_backend
from toxcmp.backends.threads import plan_threads
from toxcmp.config import default_cache_dir
from toxcmp.domain.data import (
    DEFAULT_DATASET,
    check_source,
    content_hash,
    describe,
    is_file_source,
    load,
    sample,
)
from toxcmp.domain.prompting import ChatRequest, build_request, check_render_date, today_utc
from toxcmp.domain.responses import ModelResponse
from toxcmp.errors import BackendError, Declined, ToxcmpError, UsageError
from toxcmp.run.arms import (
    Arm,
    build_arm,
    default_run_id,
    pick_reference,
    prepare_run_dir,
    validate_run_id,
)
from toxcmp.run.cache import ResponseCache
from toxcmp.run.config import CompareConfig, Observer, RunResult, SilentObserver
from toxcmp.run.local_scoring import add_divergences, add_margins
from toxcmp.run.label_scoring import add_label_probs
from toxcmp.run.teacher_forcing import add_token_parity
from toxcmp.run.planning import PlannedWork, plan_work, record_speeds, speed_key
from toxcmp.run.prompt_tokens import add_prompt_token_counts
from toxcmp.run.provenance import _now, previous_invocations, run_metadata, settle_render_date
from toxcmp.run.requests import cache_keys, model_identity
from toxcmp.run.scheduler import ArmScheduler, plan_lanes
from toxcmp.run.specs import parse_backend_specs
from toxcmp.run.validation import check_data_options, check_generation


def _empty_text_response(backend: str, model: str) -> ModelResponse:
    return ModelResponse(content="", reasoning="", raw_text="", backend=backend, model=model, latency_s=0.0,
                         error="input text is empty")


def run_compare(cfg: CompareConfig, observer: Observer | None = None,
                confirm: Callable[[PlannedWork], bool] | None = None) -> RunResult:
    """`confirm`: shown the planned work (rows, requests, what the cache holds, an estimate) once the arms and
    the rows are known and before anything is sent or written; a False answer stops the run (`Declined`)."""
    observer = observer or SilentObserver()
    today = today_utc()  # the run's start date: its default render date
    if cfg.unparsed_as not in UNPARSED_AS:
        raise UsageError(f"--unparsed-as must be one of {', '.join(UNPARSED_AS)}", "the study's way is 0")
    if not 0.0 <= cfg.threshold <= 1.0:
        raise UsageError(f"--threshold must be in [0, 1] (got {cfg.threshold})", "e.g. --threshold 0.95")
    if not 0.0 <= cfg.min_labelled <= 1.0:
        raise UsageError(f"--min-labelled must be in [0, 1] (got {cfg.min_labelled})", "e.g. --min-labelled 0.5")
    if not 0.0 < cfg.margin < 1.0:
        raise UsageError(f"--margin must be in (0, 1) (got {cfg.margin})", "e.g. --margin 0.02")
    if cfg.repeats < 1:
        raise UsageError(f"--repeats must be at least 1 (got {cfg.repeats})", "e.g. --repeats 2")
    if cfg.chunk_size < 1:
        raise UsageError("--chunk-size must be positive", "e.g. --chunk-size 16")
    if cfg.run_id:
        validate_run_id(cfg.run_id)
    if cfg.render_date is not None:
        check_render_date(cfg.render_date)
    spec_notes: list[str] = []  # what `provider=*` expanded to
    specs = parse_backend_specs(cfg.backends, model=cfg.model, settings=cfg.backend, notes=spec_notes)
    cache_dir = Path(cfg.backend.cache_dir or default_cache_dir())
    base = replace(cfg.backend, cache_dir=cache_dir)
    check_generation(cfg.generation)
    check_data_options(cfg)
    check_source(cfg.dataset)
    if is_file_source(cfg.dataset) and (cfg.version or cfg.split):
        raise UsageError("--dataset-version/--split choose a Hub config and split; a file has neither",
                         f"drop them, or pass a Hub id instead of {cfg.dataset}")
    built = [build_arm(s, cfg, base) for s in specs]  # every precondition before any data or model is loaded
    ref_index = pick_reference([a for a, _ in built], cfg.reference)
    arms = [built[ref_index][0]] + [a for i, (a, _) in enumerate(built) if i != ref_index]  # the reference first
    notes: list[str | None] = [*spec_notes, *(note for _, note in built)]
    together = cfg.concurrent_sides and not arms_compete(arms)
    threads = plan_threads([a.options.computes_here() for a in arms], together, base.threads)
    # an arm's own `threads=` (backend spec) wins over --threads and the plan
    arms = [replace(a, options=replace(a.options, threads=a.options.threads or n)) if n else a
            for a, n in zip(arms, threads.per_side)]
    engines: list[Backend] = [get_backend(a.spec.name, a.options) for a in arms]
    cache = None
    try:
        unreachable = {}
        for k, (engine, arm) in enumerate(zip(engines, arms)):
            if isinstance(engine, Preflight):
                try:
                    engine.check_reachable(arm.model)  # a dead server is found at once
                except BackendError as exc:
                    unreachable[k] = exc
        frame, info = load(cfg.dataset, cfg.version, cfg.split or "test", cfg.text_column, cfg.label_column)
        frame, info, rows_note = rows_the_recordings_hold(frame, info, engines, cfg)
        picked = sample(frame, info, cfg.sample_size, cfg.seed, cfg.human_only, cfg.stratify, cfg.limit)
        examples = picked.frame.to_dicts()
        sample_meta = describe(picked)
        run_id = cfg.run_id or default_run_id(cfg, arms[0].model, arms[0].policy, sample_meta, specs, arms)
        # before any request is built: a rerun renders at the date its run dir recorded (not part of the run id,
        # so a rerun on another day finds that dir; see settle_render_date)
        render_date = settle_render_date(cfg.render_date, Path(cfg.output_dir) / run_id, today)
        requests = [arm_requests(arm, examples, render_date) for arm in arms]
        cache = ResponseCache(cache_dir) if cfg.use_cache else None
        for k, exc in unreachable.items():  # a server that is down only matters when something is not cached
            live = [r for r in requests[k] if r is not None]
            if not all(all_cached(engines[k], live, cache, r) for r in range(cfg.repeats)):
                raise exc
            notes.append(f"{arms[k].label}: {exc.message}; every answer is in the cache, so the run goes on")
        for note in (*notes, info.note, rows_note, picked.note):  # before the plan: they say what the rows and arms are
            if note:
                observer.log(note)
        lanes = plan_lanes([a.options.computes_here() for a in arms], cfg.concurrent_sides)
        if confirm is not None:
            work = plan_work([a.label for a in arms], engines, requests, cfg.repeats, cache, lanes, cache_dir)
            if not confirm(work):
                raise Declined("the run was declined at its plan", "nothing was sent or written")
        run_dir = prepare_run_dir(Path(cfg.output_dir), run_id)
        meta = run_metadata(cfg, arms, engines, sample_meta, run_id, render_date)
    except BaseException:
        for engine in engines:
            engine.close()
        if cache is not None:
            cache.close()
        raise
    labels = [a.label for a in arms]
    stats = {label: {"calls": 0, "seconds": 0.0, "cached": 0} for label in labels}
    status, reason = "complete", None
    started = time.time()
    meta["threads"] = dict(threads.record, sides={label: a.options.threads if n else None
                                                  for label, a, n in zip(labels, arms, threads.per_side)})
    meta["scheduling"] = {"sides": "concurrent" if together else "sequential",
                          "why": scheduling_reason(arms, cfg.concurrent_sides),
                          "lanes": [[labels[k] for k in lane] for lane in lanes]}  # each at its own pace
    observer.start(len(examples), labels, meta)
    if together and len(arms) > 1:
        observer.log("the arms use different resources: each runs at its own pace")
    elif len(lanes) > 1:
        observer.log(f"{', '.join(labels[k] for k in lanes[0])} compute on this machine: they take turns; "
                     "the other arms run at their own pace")
    slots = [(k, r) for k in range(len(arms)) for r in range(cfg.repeats)]

    def make_record(i: int, answers: Sequence[ModelResponse]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """An example's tidy rows, and what the live view shows: its pair row in every comparison (each arm's
        repeat 0 against the reference's), by arm label in arm order; one arm (an evaluation): its own row."""
        rows = [tidy_row(examples[i], arms[k].label, r, answer, arms[k].policy, arms[k].model.harmony, cfg.unparsed_as)
                for (k, r), answer in zip(slots, answers)]
        if len(arms) == 1:
            return rows, {arms[0].label: rows[0]}
        sides = [(a.policy, a.model.harmony) for a in arms]
        return rows, {arms[k].label: pair_row(rows[0], rows[k * cfg.repeats], (sides[0], sides[k]), cfg.unparsed_as)
                      for k in range(1, len(arms))}

    step = ArmScheduler(engines, labels, requests, len(examples), slots, lanes, cfg.chunk_size, cache, stats,
                        observer, make_record,
                        empty=lambda k: _empty_text_response(engines[k].name, arms[k].model.model_id))
    records: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []
    try:
        with phases.handler(observer.phase):
            step.run()
        step.flush(records)
    except KeyboardInterrupt:
        step.flush(records)
        status, reason = "interrupted", f"interrupted after {len(records)} of {len(examples)} examples"
        observer.log(reason + "; writing the finished rows")
    except Exception as exc:  # noqa: BLE001 - any backend failure: keep the rows so far, then report it
        step.flush(records)
        reason = exc.one_line() if isinstance(exc, ToxcmpError) else f"{type(exc).__name__}: {exc}".splitlines()[0]
        status = "failed"
        observer.log(f"backend failure after {len(records)} of {len(examples)} examples: {reason}")
    finally:
        if cfg.use_cache:
            record_speeds(cache_dir, measured_speeds(engines, requests, labels, stats), _now())
        for engine in engines:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
                pass
        if cache is not None:
            cache.close()
    try:  # the view stays up, saying what the run does, until the files are written (`scoring_phase`)
        observer.phase(scoring_phase(len(records), len(examples)), detail=True)
        result = score_and_write(cfg, arms, engines, requests, examples, records, stats, meta, run_dir,
                                 status, reason, started, observer, cache_dir)
        observer.phase(written_phase(len(records), len(examples), run_dir), detail=True)
    finally:
        observer.stop()
    return result


def rows_the_recordings_hold(frame: Any, info: Any, engines: Sequence[Backend],
                              cfg: CompareConfig) -> tuple[Any, Any, str | None]:
    """When every arm replays a recording and no dataset was named, the rows every recording holds (the default
    dataset would make each row they lack an error row)."""
    import polars as pl

    if cfg.dataset != DEFAULT_DATASET or not engines or not all(isinstance(e, AnswersKnownRows) for e in engines):
        return frame, info, None
    held = pl.Series([all(e.covers(i, t) for e in engines)
                      for i, t in zip(frame["example_id"].to_list(), frame["text"].to_list())], dtype=pl.Boolean)
    kept = frame.filter(held)
    if kept.height == 0:
        raise UsageError(f"the recordings hold none of the {frame.height} rows of {info.source}",
                         "pass the dataset they were recorded on with --dataset")
    info = replace(info, rows=kept.height, content_sha256=content_hash(kept))  # the rows run: the run id's data
    recorded = sorted({e.rows for e in engines})
    sizes = " and ".join(str(n) for n in recorded) + (" rows each" if len(engines) > 1 and len(recorded) == 1 else " rows")
    return kept, info, (f"every arm is recorded: the run takes the {kept.height} rows of {info.source} (of its "
                        f"{frame.height}) that every recording holds (the recordings hold {sizes}; a recorded row "
                        f"that is not in {info.source} is not run)")


def measured_speeds(engines: Sequence[Backend], requests: Sequence[Sequence[ChatRequest | None]],
                    labels: Sequence[str], stats: dict[str, dict[str, Any]]) -> dict[str, tuple[int, float]]:
    measured = {}
    for engine, arm_requests, label in zip(engines, requests, labels):
        first = next((r for r in arm_requests if r is not None), None)
        if first is not None and stats[label]["calls"]:
            measured[speed_key(engine, first)] = (stats[label]["calls"], stats[label]["seconds"])
    return measured


def scoring_phase(done: int, total: int) -> str:
    """What the run does once its rows are in (or it stopped): it scores them and writes the files."""
    rows = f"all {total} rows answered" if done >= total else f"stopped after {done} of {total} rows"
    return f"{rows}; scoring and writing the results"


def written_phase(done: int, total: int, run_dir: Path) -> str:
    rows = f"all {total} rows answered" if done >= total else f"stopped after {done} of {total} rows"
    return f"{rows}; scored, results written to {run_dir}"


def score_and_write(cfg: CompareConfig, arms: Sequence[Arm], engines: Sequence[Backend],
                    requests: Sequence[Sequence[ChatRequest | None]], examples: Sequence[dict[str, Any]],
                    records: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]], stats: dict[str, dict[str, Any]],
                    meta: dict[str, Any], run_dir: Path, status: str, reason: str | None, started: float,
                    observer: Observer, cache_dir: Path) -> RunResult:
    """After the rows: prompt-token counts, margins and divergences (the local model), the summary, the files."""
    labels = [a.label for a in arms]
    tidy: list[dict[str, Any]] = []
    for rows, _ in records:
        tidy.extend(rows)
    try:  # toxcmp's own render counted beside each reported prompt-token count (needs the tokenizer only)
        add_prompt_token_counts(tidy, arms, requests, examples, observer, cache_dir)
    except Exception as exc:  # noqa: BLE001 - a diagnosis extra must never cost the run its results
        observer.log(f"prompt-token parity skipped: {type(exc).__name__}: {exc}")
    assembled = assemble(tidy, labels, labels[0], {a.label: (a.policy, a.model.harmony) for a in arms}, cfg.unparsed_as)
    if status == "complete" and cfg.margins:
        for k in range(1, len(arms)):
            try:
                add_margins(assembled.comparisons[labels[k]], (arms[0], arms[k]), requests[0], requests[k], examples,
                            observer)
            except Exception as exc:  # noqa: BLE001 - a diagnosis extra must never cost the run its results
                observer.log(f"margin scoring skipped: {type(exc).__name__}: {exc}")
            try:
                add_divergences(assembled.comparisons[labels[k]], (arms[0], arms[k]), requests[0], requests[k],
                                examples, observer)
            except Exception as exc:  # noqa: BLE001
                observer.log(f"divergence scoring skipped: {type(exc).__name__}: {exc}")
    token_parity: dict[str, Any] = {}
    if status == "complete" and cfg.margins:
        try:  # arms that sent token log p, each token against the local model's (issue 24)
            token_parity = add_token_parity(tidy, arms, requests, examples, observer)
        except Exception as exc:  # noqa: BLE001 - a diagnosis extra must never cost the run its results
            observer.log(f"token log-probability scoring skipped: {type(exc).__name__}: {exc}")
    label_probs: dict[str, Any] = {}
    if status == "complete" and cfg.margins and any(r.get("logprobs_asked") is not None for r in tidy):
        try:  # asked for log-probabilities: each arm's label probabilities and calibration (issue 24)
            label_probs = add_label_probs(tidy, arms, requests, examples, observer)
        except Exception as exc:  # noqa: BLE001
            observer.log(f"label probabilities skipped: {type(exc).__name__}: {exc}")
    meta["reliability"] = {label: engine.reliability() for label, engine in zip(labels, engines)
                           if isinstance(engine, ReportsReliability)}
    meta["model"]["identity"] = {}
    for arm, engine in zip(arms, engines):  # after the run: a local backend reports what it actually loaded
        try:
            meta["model"]["identity"][arm.label] = model_identity(engine, arm.model)
        except Exception as exc:  # noqa: BLE001 - provenance must not cost the run its results
            meta["model"]["identity"][arm.label] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    elapsed = round(time.time() - started, 3)
    invocations = previous_invocations(run_dir) + [{"started_at": meta["started_at"], "elapsed_s": elapsed,
                                                    "status": status, "calls": {k: v["calls"] for k, v in stats.items()},
                                                    "command": cfg.command}]
    meta.update({"finished_at": _now(), "elapsed_s": elapsed, "status": status, "reason": reason,
                 "throughput": {k: _eps(v) for k, v in stats.items()}, "invocations": invocations,
                 "first_started_at": invocations[0]["started_at"],
                 "total_elapsed_s": round(sum(i["elapsed_s"] for i in invocations), 3)})
    summary = finalize_summary(assembled, tidy, cfg.threshold, meta, cfg.unparsed_as, cfg.min_labelled, cfg.margin,
                               cfg.repeats)
    if token_parity:
        summary["token_parity"] = token_parity
    if label_probs:
        summary["label_probs"] = label_probs
    pairs = [row for rows in assembled.comparisons.values() for row in rows]
    observer.phase(f"writing the results to {run_dir}", detail=True)
    write_run_files(run_dir, tidy, pairs, summary)
    # the headline comparison's pair rows; one arm (an evaluation): its own first answers, one tidy row per example
    headline = assembled.comparisons[labels[1]] if len(labels) > 1 else assembled.first[labels[0]]
    return RunResult(headline, summary, run_dir, status, reason, tidy=tidy, pairs=pairs,
                     comparisons=assembled.comparisons)


def arm_requests(arm: Arm, examples: Sequence[dict[str, Any]],
                 render_date: str | None = None) -> list[ChatRequest | None]:
    out: list[ChatRequest | None] = []
    for ex in examples:
        try:
            out.append(build_request(arm.policy, ex["text"], arm.model, arm.generation, example_id=ex["example_id"],
                                     render_date=render_date))
        except UsageError:
            out.append(None)  # empty text: recorded as a per-example error, never sent
    return out


def all_cached(engine: Backend, requests: Sequence[ChatRequest], cache: ResponseCache | None, repeat: int = 0) -> bool:
    if cache is None:
        return False
    return all(cache.get(key) is not None for key in cache_keys(engine, requests, repeat))


def arms_compete(arms: Sequence[Arm]) -> bool:
    """Two arms compete when both compute on this machine's CPU (or the same GPU): a local model and a spawned
    local server, or two local models. A recording computes nothing; a remote or user-run server is not ours to
    schedule. Each backend's options say which they are."""
    return sum(a.options.computes_here() for a in arms) > 1


def scheduling_reason(arms: Sequence[Arm], allowed: bool) -> str:
    if not allowed:
        return "--sequential-sides"
    if arms_compete(arms):
        return "both sides compute on this machine"
    return "the sides use different resources"


def finalize_summary(assembled, tidy: Sequence[dict[str, Any]], threshold: float, meta: dict[str, Any],
                     unparsed_as: str, min_labelled: float = DEFAULT_MIN_LABELLED, margin: float = DEFAULT_MARGIN,
                     repeats: int = 1) -> dict[str, Any]:
    summary = summarize_arms(assembled, meta.get("arms") or [], threshold, min_labelled, margin,
                             status=meta.get("status") or "complete", repeats=repeats)
    summary["n_errors"] = len({r["example_id"] for r in tidy if r.get("error")})  # examples with any failed answer
    summary["unparsed_as"] = unparsed_as
    summary["status"] = meta.get("status") or "complete"
    summary["metadata"] = meta
    asked = logprob_summary(tidy)
    if asked:
        summary["logprobs"] = asked
    reliability = meta.get("reliability") or {}
    for side in summary["backends"].values():  # this invocation's network counters, beside the rows' retries
        counters = reliability.get(side["label"]) or {}
        side["timeouts"] = int(counters.get("timeouts") or 0)
        side["breaker_trips"] = int(counters.get("breaker_trips") or 0)
        side["retry_budget_refused"] = int(counters.get("retry_budget_refused") or 0)
    from toxcmp.results.schema import stamped  # noqa: PLC0415 - keeps polars off the library import path

    return stamped(summary)  # schema_version, and the headline: which comparison the top level describes


def write_run_files(run_dir: Path, tidy: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
                    summary: dict[str, Any]) -> None:
    """The run dir's data files (results layer), then its page built from them (report layer)."""
    from toxcmp.report.html import REPORT_FILE, build_html  # noqa: PLC0415 - keeps rich/pyarrow off the library import path
    from toxcmp.results.io import write_outputs  # noqa: PLC0415

    shown = pairs if summary.get("kind") != EVALUATION else [r for r in tidy if not r.get("repeat")]  # one arm: its rows
    write_outputs(run_dir, tidy, pairs, summary, pages={REPORT_FILE: lambda: build_html(shown, summary)})


def _eps(stat: dict[str, Any]) -> dict[str, Any]:
    eps = stat["calls"] / stat["seconds"] if stat["seconds"] else None
    return {"calls": stat["calls"], "cached": stat["cached"], "seconds": round(stat["seconds"], 3),
            "examples_per_s": round(eps, 3) if eps else None}
