"""The run: sample → every arm, `repeats` times (cache in front) → tidy rows → pairs → summary → files.

Rows are produced chunk by chunk, so the live view streams and an interrupted run still writes every finished
example. Each response is cached the moment it arrives, so rerunning the same command resumes at zero cost.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from toxcmp import __version__
from toxcmp import phases
from toxcmp.backends import SPAWNED_SERVERS, Backend, BackendConfig, get_backend
from toxcmp.backends.threads import plan_threads
from toxcmp.run.cache import ResponseCache
from toxcmp.config import GenerationConfig, default_cache_dir
from toxcmp.core import resolve_api_route
from toxcmp.domain.data import DEFAULT_DATASET, check_source, describe, is_file_source, load, sample
from toxcmp.errors import BackendError, ExitCode, ToxcmpError, UsageError
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.policies import Policy, load_policy
from toxcmp.domain.prompting import ChatRequest, build_request
from toxcmp.domain.responses import ModelResponse
from toxcmp.run.requests import cache_keys, model_identity, run_requests
from toxcmp.analysis.arms import pair_row
from toxcmp.analysis.scoring import SIDES, UNPARSED_AS
from toxcmp.analysis.arms import ARM_KEYS, DEFAULT_MARGIN, assemble, summarize_arms, tidy_row
from toxcmp.run.validation import check_backend_config, check_generation
from toxcmp.analysis.verdict import DEFAULT_MIN_LABELLED, EXIT_CODES

DEFAULT_OUTPUT_DIR = Path("outputs") / "backend_comparison"
SPEC_KEYS = {"provider", "base_url", "api_server", "device", "dtype", "batch_size", "strategy", "concurrency",
             "served_model", "recording", "side", "label", "threads", *ARM_KEYS}
SPEC_ALIASES = {"path": "recording", "file": "recording"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class BackendSpec:
    """`name` or `name[key=value;key=value]`, e.g. `api[provider=together]`, `api[api_server=local]` or
    `api[api_server=llamacpp]`."""

    text: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """What reports call this side: `label=` when given; a recording by its side; else the spec as written."""
        options = dict(self.options)
        if "label" in options:
            return options["label"]
        if self.name == "recorded":
            return f"recorded:{options.get('side') or Path(options.get('recording') or '?').stem}"
        return self.text

    def config(self, base: BackendConfig) -> BackendConfig:
        values: dict[str, Any] = {k: v for k, v in self.options if k != "label" and k not in ARM_KEYS}
        for key in ("concurrency", "threads"):
            if key in values:
                values[key] = int(values[key])
        if self.name != "api":  # api-only options from the command line do not apply to other backends
            values["api_server"] = None
        return replace(base, **values)


def parse_backend_specs(text: str) -> list[BackendSpec]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    specs = [parse_backend_spec(p.strip()) for p in parts if p.strip()]
    if len(specs) < 2:
        raise UsageError(f"--backends needs at least two arms, got {len(specs)} ({text!r})",
                         "e.g. --backends api,local, or the same backend twice with different options: "
                         "'api[provider=together],api[provider=groq]'")
    texts, labels = [s.text for s in specs], [s.label for s in specs]
    for seen, kind in ((texts, "written"), (labels, "labelled")):
        dupes = sorted({x for x in seen if seen.count(x) > 1})
        if dupes:
            raise UsageError(f"two arms are {kind} {dupes[0]!r}", "give each arm different options or a label=NAME")
    return specs


def parse_backend_spec(text: str) -> BackendSpec:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[(.*)\])?", text)
    if not match:
        raise UsageError(f"cannot read backend spec {text!r}", "write name or name[key=value;key=value]")
    options = []
    for item in filter(None, (s.strip() for s in (match.group(2) or "").split(";"))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        key = SPEC_ALIASES.get(key, key)
        if not sep or key not in SPEC_KEYS:
            raise UsageError(f"bad option {item!r} in backend spec {text!r}",
                             f"options are key=value with key one of: {', '.join(sorted(SPEC_KEYS))}")
        options.append((key, value.strip()))
    return BackendSpec(text, match.group(1), tuple(options))


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


class Observer(Protocol):
    def start(self, total: int, labels: Sequence[str], meta: dict[str, Any]) -> None: ...
    def row(self, row: dict[str, Any], done: int, stats: dict[str, Any]) -> None: ...
    def log(self, message: str) -> None: ...
    def phase(self, message: str, detail: bool = False) -> None: ...  # detail: step status, live view only
    def stop(self) -> None: ...


class SilentObserver:
    def start(self, total, labels, meta):  # noqa: D102
        pass

    def row(self, row, done, stats):  # noqa: D102
        pass

    def log(self, message):  # noqa: D102
        pass

    def phase(self, message, detail=False):  # noqa: D102
        pass

    def stop(self):  # noqa: D102
        pass


@dataclass
class RunResult:
    rows: list[dict[str, Any]]  # pair rows of the first arm against the reference (the two-sided rows)
    summary: dict[str, Any]
    run_dir: Path
    status: str  # "complete", "interrupted", "failed"
    reason: str | None = None
    tidy: list[dict[str, Any]] = field(default_factory=list)  # one row per (example, arm, repeat)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # every arm against the reference

    @property
    def exit_code(self) -> int:
        if self.status == "interrupted":
            return ExitCode.INTERRUPTED
        if self.status == "failed" or self.summary.get("n_errors"):
            return ExitCode.BACKEND
        return EXIT_CODES[self.summary["verdict"]]


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise UsageError(f"invalid run id {run_id!r}",
                         "use letters, digits, '.', '_' and '-' (no path separators, no '..'), at most 128 characters")
    return run_id


RESULT_CHANGING_KEYS = ("device", "dtype", "batch_size", "strategy", "base_url", "provider", "api_server",
                        "served_model", "endpoint_label", "recording", "side")


def arm_identity(config: BackendConfig) -> dict[str, Any]:
    """The options of one arm that can change its answers (never the token, the cache dir or timeouts)."""
    return {k: getattr(config, k) for k in RESULT_CHANGING_KEYS}


def default_run_id(cfg: CompareConfig, spec: ModelSpec, policy: Policy, sample_meta: dict[str, Any],
                   specs: Sequence[BackendSpec], configs: Sequence[BackendConfig]) -> str:
    """Deterministic: the same command maps to the same directory, so a rerun resumes and overwrites it. Every
    option that can change a result or the verdict is part of it, so two different runs never share a dir."""
    identity = {"policy": policy.sha256, "model": spec.model_id, "revision": spec.revision,
                "data": sample_meta["content_sha256"], "size": cfg.sample_size, "seed": cfg.seed,
                "human_only": cfg.human_only, "stratify": cfg.stratify, "backends": [s.text for s in specs],
                "arms": [arm_identity(c) for c in configs], "generation": cfg.generation.to_dict(),
                "unparsed_as": cfg.unparsed_as, "threshold": cfg.threshold, "min_labelled": cfg.min_labelled}
    if cfg.repeats != 1 or cfg.margin != DEFAULT_MARGIN or cfg.reference is not None:  # two-arm ids stay as they were
        identity.update(repeats=cfg.repeats, margin=cfg.margin, reference=cfg.reference)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return validate_run_id(f"{policy.name}-{_safe_name(spec.name) or 'model'}-{digest}")


def _safe_name(text: str) -> str:
    """Characters a run id may not hold become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def prepare_run_dir(output_dir: Path, run_id: str) -> Path:
    """Create and probe the run dir before any model work, so an unwritable target fails fast."""
    run_dir = (output_dir / validate_run_id(run_id))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output dir {run_dir} is not writable ({exc.strerror})",
                         "pass --output-dir to a writable directory (rescore: or --no-write)") from None
    if run_dir.resolve().parent != output_dir.resolve():
        raise UsageError(f"run dir {run_dir} escapes {output_dir}", "use a plain run id")
    return run_dir


def _empty_text_response(backend: str, model: str) -> ModelResponse:
    return ModelResponse(content="", reasoning="", raw_text="", backend=backend, model=model, latency_s=0.0,
                         error="input text is empty")


@dataclass(frozen=True)
class Arm:
    """One configuration that answers requests: a backend with its options, and its own model, policy and
    generation settings (the run's, unless the spec overrides them)."""

    spec: BackendSpec
    model: ModelSpec
    policy: Policy
    generation: GenerationConfig
    config: BackendConfig

    @property
    def label(self) -> str:
        return self.spec.label

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "spec": self.spec.text, "backend": self.spec.name,
                "identity": arm_identity(self.config), "model": self.model.name, "model_id": self.model.model_id,
                "revision": self.model.revision, "harmony": self.model.harmony, "policy": self.policy.name,
                "policy_sha256": self.policy.sha256, "reasoning_effort": self.generation.reasoning_effort,
                "max_new_tokens": self.generation.max_new_tokens}


def build_arm(spec: BackendSpec, cfg: CompareConfig, base: BackendConfig) -> tuple[Arm, str | None]:
    """Checks every option of one arm (before any data or model is loaded) and resolves its api route."""
    options = dict(spec.options)
    model = resolve_model(options.get("model") or cfg.model, cfg.revision)
    policy = load_policy(options.get("policy") or cfg.policy)
    overrides: dict[str, Any] = {}
    if "reasoning_effort" in options:
        overrides["reasoning_effort"] = options["reasoning_effort"]
    if "max_new_tokens" in options:
        try:
            overrides["max_new_tokens"] = int(options["max_new_tokens"])
        except ValueError:
            raise UsageError(f"max_new_tokens must be a number in {spec.text!r}", "e.g. max_new_tokens=256") from None
    generation = replace(cfg.generation, **overrides)
    check_generation(generation)
    try:
        config = spec.config(base)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad option in backend spec {spec.text!r}: {exc}", "options are key=value") from None
    check_backend_config(config, f"in {spec.text!r}")
    note = None
    if spec.name == "api":
        config, note = resolve_api_route(model, config, "for the api backend")
    return Arm(spec, model, policy, generation, config), note


def pick_reference(arms: Sequence[Arm], wanted: str | None) -> int:
    if wanted is None:
        return 0
    for i, arm in enumerate(arms):
        if wanted in (arm.label, arm.spec.text):
            return i
    raise UsageError(f"--reference {wanted!r} is none of the arms", f"use one of: {', '.join(a.label for a in arms)}")


def run_compare(cfg: CompareConfig, observer: Observer | None = None) -> RunResult:
    from toxcmp.report.console import write_outputs  # noqa: PLC0415 - keeps rich/pyarrow off the library import path

    observer = observer or SilentObserver()
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
    specs = parse_backend_specs(cfg.backends)
    cache_dir = Path(cfg.backend.cache_dir or default_cache_dir())
    base = replace(cfg.backend, cache_dir=cache_dir)
    check_generation(cfg.generation)
    check_source(cfg.dataset)
    if is_file_source(cfg.dataset) and (cfg.version or cfg.split):
        raise UsageError("--dataset-version/--split choose a Hub config and split; a file has neither",
                         f"drop them, or pass a Hub id instead of {cfg.dataset}")
    built = [build_arm(s, cfg, base) for s in specs]  # every precondition before any data or model is loaded
    ref_index = pick_reference([a for a, _ in built], cfg.reference)
    arms = [built[ref_index][0]] + [a for i, (a, _) in enumerate(built) if i != ref_index]  # the reference first
    notes: list[str | None] = [note for _, note in built]
    together = cfg.concurrent_sides and not sides_compete([a.spec for a in arms], [a.config for a in arms])
    threads = plan_threads([_uses_this_machine(a.spec, a.config) for a in arms], together, base.threads)
    # an arm's own `threads=` (backend spec) wins over --threads and the plan
    arms = [replace(a, config=replace(a.config, threads=a.config.threads or n)) if n else a
            for a, n in zip(arms, threads.per_side)]
    engines: list[Backend] = [get_backend(a.spec.name, a.config) for a in arms]
    cache = None
    try:
        unreachable = {}
        for k, (engine, arm) in enumerate(zip(engines, arms)):
            if hasattr(engine, "preflight") and getattr(engine, "base_url", None):
                try:
                    engine.preflight(arm.config.served_model or arm.model.model_id)  # a dead server is found at once
                except BackendError as exc:
                    unreachable[k] = exc
        frame, info = load(cfg.dataset, cfg.version or "toxicchat0124", cfg.split or "test")
        picked = sample(frame, info, cfg.sample_size, cfg.seed, cfg.human_only, cfg.stratify)
        examples = picked.frame.to_dicts()
        requests = [arm_requests(arm, examples) for arm in arms]
        cache = ResponseCache(cache_dir) if cfg.use_cache else None
        for k, exc in unreachable.items():  # a server that is down only matters when something is not cached
            live = [r for r in requests[k] if r is not None]
            if not all(all_cached(engines[k], live, cache, r) for r in range(cfg.repeats)):
                raise exc
            notes.append(f"{arms[k].label}: {exc.message}; every answer is in the cache, so the run goes on")
        sample_meta = describe(picked)
        run_id = cfg.run_id or default_run_id(cfg, arms[0].model, arms[0].policy, sample_meta, specs,
                                              [a.config for a in arms])
        run_dir = prepare_run_dir(Path(cfg.output_dir), run_id)
        meta = run_metadata(cfg, arms, engines, sample_meta, run_id)
    except BaseException:
        for engine in engines:
            engine.close()
        if cache is not None:
            cache.close()
        raise
    for note in (*notes, info.note, picked.note):
        if note:
            observer.log(note)
    labels = [a.label for a in arms]
    tidy: list[dict[str, Any]] = []
    stats = {label: {"calls": 0, "seconds": 0.0, "cached": 0} for label in labels}
    status, reason = "complete", None
    started = time.time()
    meta["threads"] = dict(threads.record, sides={label: a.config.threads if n else None
                                                  for label, a, n in zip(labels, arms, threads.per_side)})
    meta["scheduling"] = {"sides": "concurrent" if together else "sequential",
                          "why": scheduling_reason([a.spec for a in arms], [a.config for a in arms], cfg.concurrent_sides)}
    observer.start(len(examples), labels[:2], meta)
    if together:
        observer.log("the arms use different resources: running them at the same time")
    slots = [(k, r) for k in range(len(arms)) for r in range(cfg.repeats)]

    def make_record(i: int, answers: Sequence[ModelResponse]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        rows = [tidy_row(examples[i], arms[k].label, r, answer, arms[k].policy, arms[k].model.harmony, cfg.unparsed_as)
                for (k, r), answer in zip(slots, answers)]
        sides = ((arms[0].policy, arms[0].model.harmony), (arms[1].policy, arms[1].model.harmony))
        return rows, pair_row(rows[0], rows[cfg.repeats], sides, cfg.unparsed_as)  # what the live view shows

    step = ChunkStep([engines[k] for k, _ in slots], [labels[k] for k, _ in slots], [requests[k] for k, _ in slots],
                     examples, cache, stats, observer, make_record, [arms[k].model.model_id for k, _ in slots],
                     together, repeats=[r for _, r in slots])
    records: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []
    try:
        with phases.handler(observer.phase):
            for lo in range(0, len(examples), cfg.chunk_size):
                step.run(list(range(lo, min(lo + cfg.chunk_size, len(examples)))), records)
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
        for engine in engines:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing must not hide the run's own outcome
                pass
        if cache is not None:
            cache.close()
        observer.stop()
    for rows, _ in records:
        tidy.extend(rows)
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
    meta["reliability"] = {label: engine.reliability() for label, engine in zip(labels, engines)
                           if callable(getattr(engine, "reliability", None))}
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
    pairs = [row for rows in assembled.comparisons.values() for row in rows]
    write_outputs(run_dir, tidy, pairs, summary)
    return RunResult(assembled.comparisons[labels[1]], summary, run_dir, status, reason, tidy=tidy, pairs=pairs)


def arm_requests(arm: Arm, examples: Sequence[dict[str, Any]]) -> list[ChatRequest | None]:
    out: list[ChatRequest | None] = []
    for ex in examples:
        try:
            out.append(build_request(arm.policy, ex["text"], arm.model, arm.generation, example_id=ex["example_id"]))
        except UsageError:
            out.append(None)  # empty text: recorded as a per-example error, never sent
    return out


def all_cached(engine: Backend, requests: Sequence[ChatRequest], cache: ResponseCache | None, repeat: int = 0) -> bool:
    if cache is None:
        return False
    return all(cache.get(key) is not None for key in cache_keys(engine, requests, repeat))


class ChunkStep:
    """One chunk through every slot (an arm × a repeat), the cache in front. An example is emitted the moment its
    last slot answers; finished examples join `records` in example order (also when the chunk is cut short by
    Ctrl-C or a failure). With `together`, each arm runs in its own thread (its repeats one after the other)."""

    def __init__(self, engines, labels, requests, examples, cache, stats, observer, make_record, model_ids, together,
                 repeats):
        self.engines, self.labels, self.requests, self.examples = engines, labels, requests, examples
        self.cache, self.stats, self.observer, self.make_record = cache, stats, observer, make_record
        self.model_ids, self.together, self.repeats = model_ids, together, repeats
        self.lock = threading.Lock()
        self.pending: dict[int, Any] = {}
        self.done = 0

    def run(self, chunk: list[int], records: list[Any]) -> None:
        self.answers: list[dict[int, ModelResponse]] = [{} for _ in self.engines]
        for k, engine in enumerate(self.engines):  # empty texts are never sent: an error response at once
            for i in chunk:
                if self.requests[k][i] is None:
                    self._answer(k, i, _empty_text_response(engine.name, self.model_ids[k]))
        groups: dict[int, list[int]] = {}
        for k, engine in enumerate(self.engines):
            groups.setdefault(id(engine), []).append(k)
        if self.together:
            errors: list[BaseException] = []
            threads = [threading.Thread(target=self._slots_guarded, args=(ks, chunk, errors), daemon=True)
                       for ks in groups.values()]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.1)  # short waits keep the main thread able to take Ctrl-C
            if errors:
                raise errors[0]
        else:
            for k in range(len(self.engines)):
                self._slot(k, chunk)
        self.flush(records)

    def _slots_guarded(self, slots: list[int], chunk: list[int], errors: list[BaseException]) -> None:
        try:
            for k in slots:
                self._slot(k, chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            errors.append(exc)

    def _slot(self, k: int, chunk: list[int]) -> None:
        live = [i for i in chunk if self.requests[k][i] is not None]
        if not live:
            return
        label = self.labels[k]
        repeat = f" (repeat {self.repeats[k] + 1})" if self.repeats[k] else ""
        self.observer.phase(f"{label}: answering {len(live)} example(s){repeat}", detail=True)
        t0 = time.perf_counter()
        got = run_requests(self.engines[k], [self.requests[k][i] for i in live], self.cache,
                           on_response=lambda j, response: self._answer(k, live[j], response), repeat=self.repeats[k])
        elapsed = time.perf_counter() - t0
        fresh = sum(not r.cached for r in got)
        with self.lock:
            self.stats[label]["calls"] += fresh
            self.stats[label]["cached"] += len(got) - fresh
            self.stats[label]["seconds"] += elapsed if fresh else 0.0

    def _answer(self, k: int, i: int, response: ModelResponse) -> None:
        with self.lock:
            self.answers[k][i] = response
            if not all(i in slot for slot in self.answers):
                return
            record = self.make_record(i, [slot[i] for slot in self.answers])
            self.pending[i] = record
            self.done += 1
            self.observer.row(record[1], self.done, self.stats)

    def flush(self, records: list[Any]) -> None:
        with self.lock:
            records.extend(self.pending[i] for i in sorted(self.pending))
            self.pending.clear()


def sides_compete(specs: Sequence[BackendSpec], configs: Sequence[BackendConfig]) -> bool:
    """Two sides compete when both compute on this machine's CPU (or the same GPU): a local model and a spawned
    local server, or two local models. A recording computes nothing; a remote or user-run server is not ours to
    schedule."""
    return sum(_uses_this_machine(s, c) for s, c in zip(specs, configs)) > 1


def _uses_this_machine(spec: BackendSpec, config: BackendConfig) -> bool:
    if spec.name == "local":
        return True
    return spec.name == "api" and config.api_server in SPAWNED_SERVERS and not config.base_url


def scheduling_reason(specs, configs, allowed: bool) -> str:
    if not allowed:
        return "--sequential-sides"
    if sides_compete(specs, configs):
        return "both sides compute on this machine"
    return "the sides use different resources"


def previous_invocations(run_dir: Path) -> list[dict[str, Any]]:
    """Earlier invocations of the same run (a resume keeps the history: when it started, what each one did)."""
    try:
        meta = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError):
        return []
    if meta.get("invocations"):
        return list(meta["invocations"])
    if meta.get("started_at"):
        return [{"started_at": meta["started_at"], "elapsed_s": meta.get("elapsed_s") or 0.0,
                 "status": meta.get("status"), "calls": {}, "command": None}]
    return []


def finalize_summary(assembled, tidy: Sequence[dict[str, Any]], threshold: float, meta: dict[str, Any],
                     unparsed_as: str, min_labelled: float = DEFAULT_MIN_LABELLED, margin: float = DEFAULT_MARGIN,
                     repeats: int = 1) -> dict[str, Any]:
    summary = summarize_arms(assembled, meta.get("arms") or [], threshold, min_labelled, margin,
                             status=meta.get("status") or "complete", repeats=repeats)
    summary["n_errors"] = len({r["example_id"] for r in tidy if r.get("error")})  # examples with any failed answer
    summary["unparsed_as"] = unparsed_as
    summary["status"] = meta.get("status") or "complete"
    summary["metadata"] = meta
    reliability = meta.get("reliability") or {}
    for side in summary["backends"].values():  # this invocation's network counters, beside the rows' retries
        counters = reliability.get(side["label"]) or {}
        side["timeouts"] = int(counters.get("timeouts") or 0)
        side["breaker_trips"] = int(counters.get("breaker_trips") or 0)
        side["retry_budget_refused"] = int(counters.get("retry_budget_refused") or 0)
    return summary


def _eps(stat: dict[str, Any]) -> dict[str, Any]:
    eps = stat["calls"] / stat["seconds"] if stat["seconds"] else None
    return {"calls": stat["calls"], "cached": stat["cached"], "seconds": round(stat["seconds"], 3),
            "examples_per_s": round(eps, 3) if eps else None}


def local_side(pair: Sequence[Arm]) -> int | None:
    """Which side of a comparison is the `local` backend (its model can score both sides), if either."""
    return next((i for i, arm in enumerate(pair) if arm.spec.name == "local"), None)


def with_local_model(todo, arm: Arm, requests, examples):
    """(row, loaded model, exact prompt) for each row of `todo`, with the local arm's model and its request."""
    from toxcmp.backends.local import LocalBackend, render_prompt

    backend = LocalBackend(arm.config)
    by_id = {ex["example_id"]: req for ex, req in zip(examples, requests)}
    for row in todo:
        request = by_id.get(row["example_id"])
        if request is not None:
            loaded = backend.load(request.model)
            yield row, loaded, render_prompt(loaded.tokenizer, request)


def add_margins(rows, pair: Sequence[Arm], requests_a, requests_b, examples, observer) -> None:
    """For label disagreements, ask the local model how close it came to the other backend's label."""
    local = local_side(pair)
    todo = [r for r in rows if r["cause"] in ("label_flip", "fine_grain_only")]
    if local is None or not todo:
        return
    from toxcmp.analysis.diagnosis import label_margin

    side, other = SIDES[local], SIDES[1 - local]
    for row, loaded, prompt in with_local_model(todo, pair[local], (requests_a, requests_b)[local], examples):
        candidates = [(row[f"{side}_fine"], row[f"{other}_fine"]), (str(row[f"{side}_binary"]), str(row[f"{other}_binary"]))]
        for own, theirs in candidates:
            if own and theirs and own != theirs:
                margin = label_margin(loaded.model, loaded.tokenizer, prompt, row[f"{side}_raw"] or "", own, theirs)
                if margin is not None:
                    row["margin_nats"], row["margin_kind"] = round(margin.nats, 4), margin.kind
                    break
    observer.log(f"scored {sum(1 for r in todo if r['margin_kind'])} of {len(todo)} label disagreements with the local model")


def add_divergences(rows, pair: Sequence[Arm], requests_a, requests_b, examples, observer) -> None:
    """For texts that differ, ask the local model how close its own next token was to the other side's at the
    first token where they part (near tie or real difference)."""
    from toxcmp.analysis.divergence import DIVERGENCE_SCORE_LIMIT, token_divergence, token_fields

    local = local_side(pair)
    todo = [r for r in rows if r.get("diverge_char") is not None][:DIVERGENCE_SCORE_LIMIT]
    if local is None or not todo:
        return
    side, other = SIDES[local], SIDES[1 - local]
    observer.phase(f"scoring {len(todo)} text divergence(s) with the local model", detail=True)
    for row, loaded, prompt in with_local_model(todo, pair[local], (requests_a, requests_b)[local], examples):
        found = token_divergence(loaded.model, loaded.tokenizer, prompt, row[f"{side}_raw"] or "",
                                 row[f"{other}_raw"] or "",
                                 local_stopped=row.get(f"{side}_finish_reason") != "length",
                                 other_stopped=row.get(f"{other}_finish_reason") != "length")
        row.update(token_fields(found, side))
    scored = [r for r in todo if r.get("divergence_kind")]
    observer.log(f"scored {len(scored)} of {len(todo)} text divergences with the local model: "
                 f"{sum(r['divergence_kind'] == 'near_tie' for r in scored)} near tie(s), "
                 f"{sum(r['divergence_kind'] == 'real' for r in scored)} real")


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


def run_metadata(cfg: CompareConfig, arms: Sequence[Arm], engines, sample_meta, run_id) -> dict[str, Any]:
    """Provenance; never contains the token (BackendConfig.token is not copied). The reference arm comes first."""
    spec, policy = arms[0].model, arms[0].policy
    return {
        "toxcmp_version": __version__, "git_commit": _git_commit(), "run_id": run_id, "started_at": _now(),
        "backends": [{"label": a.label, "spec": a.spec.text, "name": a.spec.name, "options": dict(a.spec.options),
                      "endpoint": e.endpoint} for a, e in zip(arms, engines)],
        "model": {"name": spec.name, "model_id": spec.model_id, "revision": spec.revision, "harmony": spec.harmony},
        "policy": {"name": policy.name, "sha256": policy.sha256},
        "generation": cfg.generation.to_dict(), "sample_seed": cfg.seed, "dataset": sample_meta, "command": cfg.command,
        "arms": [a.describe() for a in arms], "reference": arms[0].label, "repeats": cfg.repeats, "margin": cfg.margin,
        "api": {"provider": cfg.backend.provider, "base_url": cfg.backend.base_url, "api_server": cfg.backend.api_server},
        "threshold": cfg.threshold, "unparsed_as": cfg.unparsed_as, "libraries": library_versions(),
    }


@dataclass
class RescoreResult:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    layout: str
    run_dir: Path | None


def rescore(paths: Sequence[Path], policy: str | None = None, unparsed_as: str = "none", threshold: float = 0.95,
            output_dir: Path | None = DEFAULT_OUTPUT_DIR, run_id: str | None = None,
            min_labelled: float = DEFAULT_MIN_LABELLED, margin: float | None = None) -> RescoreResult:
    """Re-parse recorded outputs and recompute every statistic; no model is called. `output_dir=None`: no files."""
    from toxcmp.report.console import read_results, write_outputs
    from toxcmp.analysis.scoring import verdict_fields

    if unparsed_as not in UNPARSED_AS:
        raise UsageError(f"--unparsed-as must be one of {', '.join(UNPARSED_AS)}", "the study's way is 0")
    tidy, meta, layout = read_results([Path(p) for p in paths])
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
    first_policy = sides[reference][0]
    meta = dict(meta, arms=arms_meta, rescored_at=_now(), rescored_with=__version__, rescore_layout=layout,
                rescore_notes=list(dict.fromkeys(notes)),
                policy=dict(meta.get("policy") or {}, name=first_policy.name, rescored_sha256=first_policy.sha256))
    margin = margin if margin is not None else float(meta.get("margin") or DEFAULT_MARGIN)
    summary = finalize_summary(assembled, tidy, threshold, meta, unparsed_as, min_labelled, margin,
                               int(meta.get("repeats") or 1))
    pairs = [row for rows in assembled.comparisons.values() for row in rows]
    run_dir = None
    if output_dir is not None:
        source = Path(paths[0])
        default_id = (meta.get("run_id") or source.stem) + "-rescored"
        run_dir = prepare_run_dir(Path(output_dir), run_id or _safe_name(default_id)[:128])
        write_outputs(run_dir, tidy, pairs, summary)
    return RescoreResult(assembled.comparisons[labels[1]], summary, layout, run_dir)


def carry_margins(source: Path, assembled) -> None:
    """Local-model margins were measured by a model, not parsed from text: a rescore keeps the recorded ones for
    the label disagreements that are still label disagreements."""
    import polars as pl

    from toxcmp.report.console import PAIRS_FILE, RESULTS_FILE

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
    from toxcmp.report.console import PAIRS_FILE

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


def request_from_run(run_dir: Path, example_id: str | None = None, prompt_hash: str | None = None,
                     arm: str | None = None) -> tuple[ChatRequest, dict[str, Any], str | None]:
    """The exact request a run sent for one example (by id, or by a prefix of its prompt hash; `arm`: whose
    request, default the reference), rebuilt from the run's own provenance; and a note when the policy or the
    model files changed since the run (the hash then differs)."""
    from toxcmp.config import GenerationConfig
    from toxcmp.report.console import read_results

    rows, meta, layout = read_results([Path(run_dir)])
    if not layout.startswith("toxcmp"):
        raise UsageError(f"{run_dir} is not a toxcmp run", "pass a run dir written by toxcmp compare")
    if not example_id and not prompt_hash:
        raise UsageError("which example?", "pass --example ID or --prompt-hash HASH")
    found = [r for r in rows if (example_id and r["example_id"] == example_id and (arm is None or r["arm"] == arm))
             or (prompt_hash and (r.get("prompt_hash") or "").startswith(prompt_hash))]
    if not found:
        raise UsageError(f"no example {example_id or prompt_hash!r} in {run_dir}", "see example_id in results.parquet")
    row = found[0]
    arms = {a.get("label"): a for a in meta.get("arms") or []}
    described = arms.get(row["arm"]) or {}
    model = meta.get("model") or {}
    spec = resolve_model(described.get("model") or model.get("name") or model.get("model_id"),
                         described.get("revision") or model.get("revision"))
    policy = load_policy(described.get("policy") or (meta.get("policy") or {}).get("name"))
    known = set(GenerationConfig.__dataclass_fields__)
    values = {k: v for k, v in (meta.get("generation") or {}).items() if k in known}
    values.update({k: described[k] for k in ("reasoning_effort", "max_new_tokens") if k in described})
    request = build_request(policy, row["text"], spec, GenerationConfig(**values), example_id=row["example_id"])
    recorded = row.get("prompt_hash")
    note = None
    if recorded and recorded != request.prompt_hash:
        note = (f"the rebuilt prompt hash {request.prompt_hash[:12]} differs from the run's {recorded[:12]} "
                f"(policy {policy.name} or model files changed since the run)")
    return request, row, note


def next_to_source(source: Path) -> Path:
    """Where a rescore goes by default: beside the run dir it rescored (or beside the recorded file)."""
    source = Path(source)
    if source.is_dir():
        return source.resolve().parent
    if source.name == "results.parquet":
        return source.resolve().parent.parent
    return source.resolve().parent
