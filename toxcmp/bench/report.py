"""`toxcmp bench report`: time re-rendering the full report of a cached run (goal: < 5 s for 2,000 rows)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig


REPORT_BUDGET_S = 5.0


@dataclass(frozen=True)
class ReportBenchResult(BenchResult):
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
        return dict(super().to_dict(), within_budget=self.within_budget)


def bench_report(sources, workdir) -> ReportBenchResult:
    """Re-render the report of a cached run: build the run once from recorded outputs, then time a full rescore."""
    import io
    from pathlib import Path

    import polars as pl
    from rich.console import Console

    from toxcmp.run.rescore import rescore
    from toxcmp.report.console import render_report
    from toxcmp.results.schema import PAIRS_FILE

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
    from toxcmp.backends.api_options import ApiOptions
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
    render_date = "2025-08-05"  # the run's pinned date: part of every request, so the seeded keys are the run's
    base = BackendConfig(cache_dir=Path(workdir) / "cache", max_retries=0)
    cache = ResponseCache(base.cache_dir)
    try:
        for side, url in zip("ab", urls):
            # the options as the run settles them (the engine asked of the URL: `unknown` here), so the keys match
            options, _ = ApiOptions.build(dc_replace(base, base_url=url)).resolve(spec)
            engine = get_backend("api", options)
            requests = [build_request(policy, r["text"], spec, generation, render_date=render_date) for r in rows]
            for r, request, key in zip(rows, requests, cache_keys(engine, requests)):  # the runner's own keys
                cache.put(key, ModelResponse(
                    content=r[f"{side}_content"], reasoning=r[f"{side}_reasoning"], raw_text="", backend="api",
                    model=spec.model_id, latency_s=0.0, prompt_hash=request.prompt_hash))
    finally:
        cache.close()
    cfg = CompareConfig(policy="toxic_simple", model="gpt-oss-20b", dataset=str(dataset), backend=base,
                        backends=",".join(f"api[base_url={u}]" for u in urls), output_dir=Path(workdir) / "runs",
                        margins=False, chunk_size=256, render_date=render_date)
    t0 = time.perf_counter()
    result = run_compare(cfg)
    elapsed = time.perf_counter() - t0
    if result.status != "complete" or len(result.rows) != len(rows) or result.summary["n_errors"]:
        raise RuntimeError(f"cached compare did not complete from the cache: {result.reason}")
    return elapsed
