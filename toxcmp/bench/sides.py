"""`toxcmp bench sides`: `compare` api (fixed-delay loopback endpoint) + local, sides at the same time vs one after
the other (issue 12)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig, local_prefixes
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig
from toxcmp.testing.fake_server import FakeChatServer


@dataclass(frozen=True)
class SidesBenchResult(BenchResult):
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
        local_prefixes.forget()
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
                local_prefixes.forget()  # as in the calibration run: each run computes its own shared prefix
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
