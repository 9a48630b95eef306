"""`toxcmp bench api`: requests/s of the api backend at concurrency 1 vs 16 against a fixed-delay loopback endpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.prompting import ChatRequest
from toxcmp.testing.fake_server import FakeChatServer


@dataclass(frozen=True)
class ApiBenchResult(BenchResult):
    requests: int
    delay_s: float
    rps_c1: float
    rps_c16: float
    speedup: float
    errors: int
    retries: int
    note: str = ("endpoint: loopback OpenAI-compatible fake server adding a fixed delay per request, standing in "
                 "for provider latency; no model runs")


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
