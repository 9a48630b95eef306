"""`toxcmp bench serve`: `--api-server local` at concurrency 1 vs N, with and without
`transformers serve --continuous-batching`."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig


@dataclass(frozen=True)
class ServeBenchResult(BenchResult):
    rows: int
    max_new_tokens: int
    eps: dict  # {"default": {"c1": x, "c8": y}, "continuous_batching": {...}}
    identical: bool  # every configuration returned the same final content
    note: str = "transformers serve on 127.0.0.1, SmolLM2-135M, greedy; start-up not timed"


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
