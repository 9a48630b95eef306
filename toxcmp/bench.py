"""Benchmarks that print ratios against a baseline measured in the same process."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from .backends import BackendConfig
from .config import GenerationConfig
from .fake_server import FakeChatServer
from .models import ModelSpec
from .prompting import ChatRequest


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
    from .backends.api import ApiBackend

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

    from .compare import rescore
    from .report import RESULTS_FILE, render_report

    built = rescore([Path(s) for s in sources], output_dir=Path(workdir), run_id="bench-report")
    cached_compare_s = _cached_compare(built.rows, Path(workdir))
    t0 = time.perf_counter()
    rows = pl.read_parquet(built.run_dir / RESULTS_FILE).height
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

    from .backends import get_backend
    from .cache import ResponseCache, cache_key
    from .compare import CompareConfig, run_compare
    from .models import resolve_model
    from .policies import load_policy
    from .prompting import build_request
    from .results import ModelResponse

    dataset = Path(workdir) / "dataset.parquet"
    pl.DataFrame({"conv_id": [r["example_id"] for r in rows], "user_input": [r["text"] for r in rows],
                  "toxicity": [r["toxicity"] for r in rows]}).write_parquet(dataset)
    policy, spec, generation = load_policy("toxic_simple"), resolve_model("gpt-oss-20b"), GenerationConfig.from_defaults()
    urls = ("http://recorded-a.invalid/v1", "http://recorded-b.invalid/v1")
    base = BackendConfig(cache_dir=Path(workdir) / "cache", max_retries=0)
    cache = ResponseCache(base.cache_dir)
    try:
        for side, url in zip("ab", urls):
            endpoint = get_backend("api", dc_replace(base, base_url=url)).endpoint
            for r in rows:
                request = build_request(policy, r["text"], spec, generation)
                cache.put(cache_key("api", endpoint, request), ModelResponse(
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
