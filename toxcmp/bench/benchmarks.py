"""Benchmarks that print ratios against a baseline measured in the same process."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from toxcmp.backends import BackendConfig
from toxcmp.config import GenerationConfig
from toxcmp.testing.fake_server import FakeChatServer
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.prompting import ChatRequest


@dataclass(frozen=True)
class ApiBenchResult:
    requests: int
    delay_s: float
    rps_c1: float
    rps_c16: float
    speedup: float
    errors: int
    retries: int
    note: str = ("endpoint: loopback OpenAI-compatible fake server adding a fixed delay per request, standing in "
                 "for provider latency; no model runs")

    def to_dict(self) -> dict:
        return asdict(self)


def bench_api(n_requests: int = 64, delay_s: float = 0.1, high: int = 16) -> ApiBenchResult:
    """Requests/s of the `api` backend at concurrency 1 and `high` against a fixed-delay loopback endpoint."""
    from toxcmp.backends.api import ApiBackend

    spec = ModelSpec(name="fake-model", model_id="fake-model", revision="bench")
    requests = [ChatRequest(model=spec, messages=(("system", "policy"), ("user", f"text {i}")),
                            generation=GenerationConfig(max_new_tokens=4)) for i in range(n_requests)]
    rates, errors, retries = {}, 0, 0
    with FakeChatServer(models=["fake-model"], delay_s=delay_s) as server:
        for concurrency in (1, high):
            backend = ApiBackend(BackendConfig(base_url=server.base_url, concurrency=concurrency, max_retries=0))
            backend.name = "api"
            backend.preflight("fake-model")
            started = time.perf_counter()
            responses = backend.generate(requests)
            rates[concurrency] = n_requests / (time.perf_counter() - started)
            errors += sum(not r.ok for r in responses)
            retries += backend.stats["retries"]
    return ApiBenchResult(requests=n_requests, delay_s=delay_s, rps_c1=rates[1], rps_c16=rates[high],
                          speedup=rates[high] / rates[1], errors=errors, retries=retries)


REPORT_BUDGET_S = 5.0


@dataclass(frozen=True)
class ReportBenchResult:
    rows: int
    read_s: float  # baseline: reading results.parquet alone
    cached_compare_s: float  # `compare` with every response in the cache: lookups, rows, metrics, parquet
    rescore_s: float  # re-parse every row + all statistics (incl. 2,000 bootstrap resamples)
    render_s: float  # the full console report
    total_s: float
    ratio_to_read: float
    budget_s: float = REPORT_BUDGET_S

    @property
    def within_budget(self) -> bool:
        return self.total_s < self.budget_s and self.cached_compare_s < self.budget_s

    def to_dict(self) -> dict:
        return dict(asdict(self), within_budget=self.within_budget)


def bench_report(sources, workdir) -> ReportBenchResult:
    """Re-render the report of a cached run: build the run once from recorded outputs, then time a full rescore."""
    import io
    from pathlib import Path

    import polars as pl
    from rich.console import Console

    from toxcmp.run.rescore import rescore
    from toxcmp.report.console import PAIRS_FILE, render_report

    built = rescore([Path(s) for s in sources], output_dir=Path(workdir), run_id="bench-report")
    cached_compare_s = _cached_compare(built.rows, Path(workdir))
    t0 = time.perf_counter()
    rows = pl.read_parquet(built.run_dir / PAIRS_FILE).height  # one per example (the tidy file has one per arm)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = rescore([built.run_dir], output_dir=None)
    rescore_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    render_report(again.summary, Console(file=io.StringIO(), width=120))
    render_s = time.perf_counter() - t0
    total = rescore_s + render_s
    return ReportBenchResult(rows, read_s, cached_compare_s, rescore_s, render_s, total,
                             total / read_s if read_s else float("inf"))


def _cached_compare(rows, workdir) -> float:
    """Seed a fresh cache with the recorded responses under two API endpoints, then time a full `compare` that
    finds every answer there (no server exists at those URLs: a single cache miss would fail the run)."""
    from dataclasses import replace as dc_replace
    from pathlib import Path

    import polars as pl

    from toxcmp.backends import get_backend
    from toxcmp.run.cache import ResponseCache
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare
    from toxcmp.run.requests import cache_keys
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request
    from toxcmp.domain.responses import ModelResponse

    dataset = Path(workdir) / "dataset.parquet"
    pl.DataFrame({"conv_id": [r["example_id"] for r in rows], "user_input": [r["text"] for r in rows],
                  "toxicity": [r["toxicity"] for r in rows]}).write_parquet(dataset)
    policy, spec, generation = load_policy("toxic_simple"), resolve_model("gpt-oss-20b"), GenerationConfig.from_defaults()
    urls = ("http://recorded-a.invalid/v1", "http://recorded-b.invalid/v1")
    base = BackendConfig(cache_dir=Path(workdir) / "cache", max_retries=0)
    cache = ResponseCache(base.cache_dir)
    try:
        for side, url in zip("ab", urls):
            engine = get_backend("api", dc_replace(base, base_url=url))
            requests = [build_request(policy, r["text"], spec, generation) for r in rows]
            for r, request, key in zip(rows, requests, cache_keys(engine, requests)):  # the runner's own keys
                cache.put(key, ModelResponse(
                    content=r[f"{side}_content"], reasoning=r[f"{side}_reasoning"], raw_text="", backend="api",
                    model=spec.model_id, latency_s=0.0, prompt_hash=request.prompt_hash))
    finally:
        cache.close()
    cfg = CompareConfig(policy="toxic_simple", model="gpt-oss-20b", dataset=str(dataset), backend=base,
                        backends=",".join(f"api[base_url={u}]" for u in urls), output_dir=Path(workdir) / "runs",
                        margins=False, chunk_size=256)
    t0 = time.perf_counter()
    result = run_compare(cfg)
    elapsed = time.perf_counter() - t0
    if result.status != "complete" or len(result.rows) != len(rows) or result.summary["n_errors"]:
        raise RuntimeError(f"cached compare did not complete from the cache: {result.reason}")
    return elapsed


@dataclass(frozen=True)
class LocalBenchResult:
    rows: int
    max_new_tokens: int
    policy: str
    naive_eps: float
    batched_eps: float
    prefix_eps: float
    speedup: float  # prefix over naive
    batched_speedup: float
    identical: bool
    identical_batched: int
    identical_prefix: int
    peak_rss_mb: float
    matmul_peak_gflops: float
    mfu: dict
    prompt_tokens: int
    prefix_tokens: int
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def matmul_peak_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Best observed fp32 matmul throughput in this process: the MFU denominator."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.inference_mode():
        torch.mm(a, b)
        best = 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def bench_local(csv_path, rows: int = 64, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                model: str = "smollm2-135m", batch_size: str = "auto", log=print) -> LocalBenchResult:
    """naive (one generate per example, full prompt) vs batched vs batched + shared prefix KV, same process."""
    import resource

    import polars as pl
    import torch

    torch.manual_seed(0)
    from toxcmp.backends.local import LocalBackend
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    texts = pl.read_csv(csv_path, infer_schema=False)["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    outputs, eps, work = {}, {}, {}
    for strategy in ("naive", "batched", "prefix"):
        backend = LocalBackend(BackendConfig(strategy=strategy, batch_size=batch_size))
        loaded = backend.load(spec)  # loaded once per process (LocalModelCache); not timed
        t0 = time.perf_counter()
        outputs[strategy] = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        eps[strategy] = len(requests) / elapsed
        errors = [r.error for r in outputs[strategy] if r.error]
        if errors:
            raise RuntimeError(f"{strategy}: {len(errors)} example(s) failed, first: {errors[0]}")
        generated = sum(r.extra.get("completion_tokens", 0) for r in outputs[strategy])
        prompt = sum(r.extra.get("prompt_tokens", 0) for r in outputs[strategy])
        # useful tokens through the model: prompts (less the prefix tokens served from the cache) + generated
        computed = prompt - backend.stats["prefix_tokens_reused"] + backend.stats["prefix_tokens_computed"] + generated
        work[strategy] = (computed, elapsed)
        log(f"{strategy:8s} {elapsed:7.2f}s  {eps[strategy]:6.2f} ex/s  batches {backend.stats['batches']}")
    params = sum(p.numel() for p in loaded.model.parameters())
    peak = matmul_peak_gflops()
    mfu = {s: round(2 * params * tokens / seconds / 1e9 / peak, 4) for s, (tokens, seconds) in work.items()}
    same = {s: sum(a.raw_text == b.raw_text for a, b in zip(outputs["naive"], outputs[s])) for s in ("batched", "prefix")}
    prompt_tokens = sum(r.extra["prompt_tokens"] for r in outputs["naive"])
    prefix_tokens = backend.stats["prefix_tokens_computed"]
    return LocalBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy,
        naive_eps=round(eps["naive"], 4), batched_eps=round(eps["batched"], 4), prefix_eps=round(eps["prefix"], 4),
        speedup=round(eps["prefix"] / eps["naive"], 3), batched_speedup=round(eps["batched"] / eps["naive"], 3),
        identical=same["batched"] == same["prefix"] == len(requests), identical_batched=same["batched"],
        identical_prefix=same["prefix"], peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        matmul_peak_gflops=round(peak, 1), mfu=mfu, prompt_tokens=prompt_tokens, prefix_tokens=prefix_tokens,
        threads=torch.get_num_threads())


@dataclass(frozen=True)
class ServeBenchResult:
    rows: int
    max_new_tokens: int
    eps: dict  # {"default": {"c1": x, "c8": y}, "continuous_batching": {...}}
    identical: bool  # every configuration returned the same final content
    note: str = "transformers serve on 127.0.0.1, SmolLM2-135M, greedy; start-up not timed"

    def to_dict(self) -> dict:
        return asdict(self)


def bench_serve(csv_path, rows: int = 16, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                model: str = "smollm2-135m", concurrency: int = 8, log=print) -> ServeBenchResult:
    """Does request concurrency help a local `transformers serve`, with and without --continuous-batching?"""
    import polars as pl

    from toxcmp.backends.api import ApiBackend
    from toxcmp.backends.server import local_api_server
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    texts = pl.read_csv(csv_path, infer_schema=False)["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    eps: dict = {}
    contents = []
    for mode, continuous in (("default", False), ("continuous_batching", True)):
        with local_api_server(spec, continuous_batching=continuous) as server:
            eps[mode] = {}
            for level in (1, concurrency):
                backend = ApiBackend(BackendConfig(base_url=server.base_url, served_model=server.served_model,
                                                   concurrency=level, timeout_s=600, max_retries=0))
                t0 = time.perf_counter()
                out = backend.generate(requests)
                elapsed = time.perf_counter() - t0
                errors = [r.error for r in out if r.error]
                if errors:
                    raise RuntimeError(f"{mode} c{level}: {len(errors)} error(s), first: {errors[0]}")
                eps[mode][f"c{level}"] = round(len(requests) / elapsed, 4)
                contents.append([r.content for r in out])
                log(f"{mode:20s} c{level:<3d} {elapsed:6.1f}s  {len(requests) / elapsed:.2f} ex/s")
    return ServeBenchResult(len(requests), max_new_tokens, eps, all(c == contents[0] for c in contents))


# -- busy machine and concurrent sides (issue 12) ------------------------------------------------------------------

HOG_CODE = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"


class CpuHog:
    """`with CpuHog(cores=1, seconds=600):` — `cores` processes that each keep one core busy and stop by themselves
    after `seconds` (also stopped when the block ends)."""

    def __init__(self, cores: int = 1, seconds: float = 600.0):
        self.cores, self.seconds = cores, seconds
        self.procs: list = []

    def __enter__(self) -> "CpuHog":
        import subprocess
        import sys

        self.procs = [subprocess.Popen([sys.executable, "-c", HOG_CODE.format(seconds=self.seconds)])
                      for _ in range(self.cores)]
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@dataclass(frozen=True)
class BusyBenchResult:
    command: str
    rows: int
    max_new_tokens: int
    idle_s: float
    hog_s: float
    ratio: float  # hog / idle wall time
    goal: float
    hog_cores: int
    usable_cores: int
    threads: dict  # the run's thread plan (provenance)
    scheduling: str
    counters: dict  # {"idle"|"hog": {label: {timeouts, retries, breaker_trips, errors, concurrency}}}
    complete: bool  # every row of both runs answered on both sides
    note: str = ("one process: the run idle, then the same run with a CPU hog (a busy loop that stops by itself) on "
                 "`hog_cores` core(s); no response cache; each run loads the local model and starts its server "
                 "(the bundled model is converted once, before timing)")

    def to_dict(self) -> dict:
        return asdict(self)


def bench_busy(dataset, rows: int = 20, seed: int = 7, max_new_tokens: int = 64, policy: str = "toxic_simple",
               model: str = "smollm2-135m", hog_cores: int = 1, threads: int | None = None, workdir=None,
               log=print) -> BusyBenchResult:
    """`compare --backends api,local --api-server local` idle and under a CPU hog, in one process."""
    import tempfile
    from contextlib import nullcontext
    from pathlib import Path

    from toxcmp.backends.local import LocalModelCache
    from toxcmp.backends.threads import usable_cores
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare

    command = (f"toxcmp compare --backends api,local --api-server local --model {model} --policy {policy} "
               f"--dataset {dataset} --sample-size {rows} --seed {seed} --max-new-tokens {max_new_tokens}")
    from toxcmp.domain.models import materialize, resolve_model

    materialize(resolve_model(model))  # a bundled model's one-time conversion is not part of either run
    walls, counters, complete, meta = {}, {}, True, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        for mode in ("idle", "hog"):
            LocalModelCache.clear()  # both runs pay the model load
            cfg = CompareConfig(policy=policy, model=model, dataset=str(dataset), sample_size=rows, seed=seed,
                                backends="api,local",
                                generation=GenerationConfig.from_defaults(max_new_tokens=max_new_tokens),
                                backend=BackendConfig(api_server="local", threads=threads),  # models: the usual cache
                                output_dir=root / mode, use_cache=False, command=command)
            hog = CpuHog(hog_cores, seconds=max(600.0, 4 * walls.get("idle", 300.0))) if mode == "hog" else nullcontext()
            with hog:
                t0 = time.perf_counter()
                result = run_compare(cfg)
                walls[mode] = time.perf_counter() - t0
            summary = result.summary
            meta = summary["metadata"]
            complete = complete and result.status == "complete" and not summary["n_errors"] and summary["n"] == rows
            counters[mode] = {b["label"]: {"timeouts": b.get("timeouts", 0), "retries": b["retries"],
                                           "breaker_trips": b.get("breaker_trips", 0), "errors": b["errors"],
                                           "concurrency": (meta.get("reliability", {}).get(b["label"]) or {}).get(
                                               "concurrency")}
                              for b in summary["backends"].values()}
            log(f"{mode:4s} {walls[mode]:7.1f}s  status {result.status}  errors {summary['n_errors']}  "
                f"{counters[mode]}")
    return BusyBenchResult(command=command, rows=rows, max_new_tokens=max_new_tokens, idle_s=round(walls["idle"], 2),
                           hog_s=round(walls["hog"], 2), ratio=round(walls["hog"] / walls["idle"], 3), goal=2.5,
                           hog_cores=hog_cores, usable_cores=usable_cores(), threads=meta.get("threads", {}),
                           scheduling=(meta.get("scheduling") or {}).get("sides", ""), counters=counters,
                           complete=complete)


@dataclass(frozen=True)
class SidesBenchResult:
    rows: int
    chunk_size: int
    max_new_tokens: int
    delay_s: float  # the fake endpoint's fixed delay per request, calibrated so the api side ≈ the local side
    api_concurrency: int
    sequential_s: float
    concurrent_s: float
    speedup: float  # sequential / concurrent
    ideal: float  # (A + B) / max(A, B) from the sequential run's per-side seconds
    goal: float
    same_rows: bool  # both runs produced the same answers
    local_threads: int | None
    note: str = ("api side: loopback OpenAI-compatible fake server with a fixed delay per request (a remote provider "
                 "stand-in); local side: the real local backend; no response cache; the model is loaded before timing")

    def to_dict(self) -> dict:
        return asdict(self)


def bench_sides(dataset, rows: int = 32, max_new_tokens: int = 16, chunk_size: int = 16, delay_s: float | None = None,
                policy: str = "toxic_simple", model: str = "smollm2-135m", seed: int = 7, log=print) -> SidesBenchResult:
    """`compare` with sides run one after the other vs at the same time (api against a fixed-delay loopback
    endpoint, plus the local backend), same process."""
    import math
    import tempfile
    from pathlib import Path

    from toxcmp.backends.api import DEFAULT_CONCURRENCY
    from toxcmp.backends.local import LocalBackend
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare
    from toxcmp.domain.data import load, sample
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from toxcmp.backends.threads import plan_threads

        local = LocalBackend(BackendConfig(threads=plan_threads([False, True], True).per_side[1]))
        local.load(spec)  # loaded once per process (LocalModelCache): neither timed run pays for it
        if delay_s is None:  # calibrate: the local side's time on these rows, spread over the api side's waves
            frame, info = load(str(dataset), "toxicchat0124", "test")
            texts = [ex["text"] for ex in sample(frame, info, rows, seed).frame.to_dicts()]
            requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
            t0 = time.perf_counter()
            for lo in range(0, len(requests), chunk_size):
                local.generate(requests[lo:lo + chunk_size])
            local_s = time.perf_counter() - t0
            waves = sum(math.ceil(min(chunk_size, len(requests) - lo) / DEFAULT_CONCURRENCY)
                        for lo in range(0, len(requests), chunk_size))
            delay_s = local_s / waves
            log(f"calibration: local side {local_s:.1f}s for {len(requests)} rows → endpoint delay {delay_s:.2f}s")
        walls, per_side, answers, threads = {}, {}, {}, None
        with FakeChatServer(models=[spec.model_id], delay_s=delay_s) as server:
            for mode, together in (("sequential", False), ("concurrent", True)):
                cfg = CompareConfig(policy=policy, model=model, dataset=str(dataset), sample_size=rows, seed=seed,
                                    backends=f"api[base_url={server.base_url}],local", generation=generation,
                                    backend=BackendConfig(), output_dir=root / mode,
                                    use_cache=False, chunk_size=chunk_size, margins=False, concurrent_sides=together)
                t0 = time.perf_counter()
                result = run_compare(cfg)
                walls[mode] = time.perf_counter() - t0
                if result.status != "complete" or result.summary["n_errors"]:
                    raise RuntimeError(f"{mode}: run not complete ({result.reason or result.summary['n_errors']})")
                meta = result.summary["metadata"]
                if meta["scheduling"]["sides"] != mode:
                    raise RuntimeError(f"{mode}: the run scheduled its sides {meta['scheduling']['sides']}")
                per_side[mode] = {k: v["seconds"] for k, v in meta["throughput"].items()}
                answers[mode] = [(r["a_raw"], r["b_raw"]) for r in result.rows]
                threads = meta["threads"]["sides"].get("local")
                log(f"{mode:10s} {walls[mode]:6.1f}s  per side {per_side[mode]}")
    a, b = per_side["sequential"].values()
    return SidesBenchResult(rows=rows, chunk_size=chunk_size, max_new_tokens=max_new_tokens, delay_s=round(delay_s, 4),
                            api_concurrency=DEFAULT_CONCURRENCY, sequential_s=round(walls["sequential"], 2),
                            concurrent_s=round(walls["concurrent"], 2),
                            speedup=round(walls["sequential"] / walls["concurrent"], 3),
                            ideal=round((a + b) / max(a, b), 3), goal=1.6,
                            same_rows=answers["sequential"] == answers["concurrent"], local_threads=threads)


# -- the CPU peer: toxcmp's local backend vs llama.cpp's server (issue 15) ----------------------------------------

@dataclass(frozen=True)
class EnginesBenchResult:
    rows: int
    max_new_tokens: int
    policy: str
    threads: int
    eps: dict  # examples/s: local_naive, local_prefix, llamacpp_sequential, llamacpp_parallel
    ratios: dict  # local_prefix / llamacpp_sequential and the others, same process
    identical_prefix: int  # local prefix outputs token-identical to local naive
    identical_llamacpp: int  # llama.cpp final answers identical to local naive
    note: str = ("same rows, policy, greedy token budget and thread count; model load and server start-up not "
                 "timed; llama-cpp-python's server has no parallel slots (one request at a time under a lock): "
                 "'parallel' keeps 2 requests in flight, which it queues")

    def to_dict(self) -> dict:
        return asdict(self)


def bench_engines(dataset, rows: int = 24, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                  model: str = "smollm2-135m", threads: int | None = None, log=print) -> EnginesBenchResult:
    """local naive vs local prefix vs llama.cpp's server (sequential, 2 in flight) on the same rows, one process."""
    import torch

    from toxcmp.backends.api import ApiBackend
    from toxcmp.backends.local import LocalBackend
    from pathlib import Path

    from toxcmp.domain.data import read_file
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    from toxcmp.backends.server import gguf_of, llamacpp_version

    texts = read_file(Path(dataset))["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    llamacpp_version(), gguf_of(spec)  # before any timing: the server and a GGUF for it
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    eps: dict[str, float] = {}
    outputs: dict[str, list] = {}

    def timed(name: str, backend) -> None:
        t0 = time.perf_counter()
        out = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        errors = [r.error for r in out if r.error]
        if errors:
            raise RuntimeError(f"{name}: {len(errors)} example(s) failed, first: {errors[0]}")
        eps[name], outputs[name] = round(len(requests) / elapsed, 4), out
        log(f"{name:22s} {elapsed:7.2f}s  {len(requests) / elapsed:6.2f} ex/s")

    for strategy in ("naive", "prefix"):
        backend = LocalBackend(BackendConfig(strategy=strategy, threads=threads, device="cpu"))  # the CPU peer
        backend.load(spec)  # once per process; not timed
        timed(f"local_{strategy}", backend)
    warmup = [build_request(load_policy("toxic_simple"), "hello", spec, GenerationConfig.from_defaults(max_new_tokens=1))]
    for name, in_flight in (("llamacpp_sequential", 1), ("llamacpp_parallel", 2)):
        backend = ApiBackend(BackendConfig(api_server="llamacpp", threads=threads, concurrency=in_flight,
                                           max_retries=0, timeout_s=600))
        try:
            backend.start_server(requests)  # start-up and weight paging not timed; the warm-up uses another policy,
            backend.generate(warmup)  # so no policy prefix is left in llama.cpp's prompt cache
            timed(name, backend)
        finally:
            backend.close()
    base = eps["llamacpp_sequential"]
    ratios = {"local_prefix_vs_llamacpp": round(eps["local_prefix"] / base, 3),
              "local_naive_vs_llamacpp": round(eps["local_naive"] / base, 3),
              "local_prefix_vs_local_naive": round(eps["local_prefix"] / eps["local_naive"], 3),
              "llamacpp_parallel_vs_sequential": round(eps["llamacpp_parallel"] / base, 3)}
    naive = outputs["local_naive"]
    return EnginesBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy, threads=threads, eps=eps, ratios=ratios,
        identical_prefix=sum(a.raw_text == b.raw_text for a, b in zip(naive, outputs["local_prefix"])),
        identical_llamacpp=sum(a.content == b.content for a, b in zip(naive, outputs["llamacpp_sequential"])))
