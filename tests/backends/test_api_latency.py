"""An api row's `latency_s` is the request's own time, not its wait for a slot (issue 23): a loopback server that
takes a known time per request, more requests than slots; the wait is reported beside it as `queue_s`."""

from __future__ import annotations

import pytest

from toxcmp.backends import BackendConfig, get_backend
from toxcmp.backends.http import resilience
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

SPEC = ModelSpec(name="fake-model", model_id="fake-model", revision="test")
DELAY_S = 0.3  # what the server takes for every request
N, SLOTS = 8, 2


def _requests(n):
    policy = load_policy("toxic_simple")
    return [build_request(policy, f"text number {i}", SPEC, GenerationConfig()) for i in range(n)]


def test_latency_is_the_requests_own_time_and_the_queue_is_beside_it():
    with FakeChatServer(models=["fake-model"], delay_s=DELAY_S) as server:
        backend = get_backend("api", BackendConfig(base_url=server.base_url, concurrency=SLOTS))
        responses = backend.generate(_requests(N))
    latencies = [r.latency_s for r in responses]
    queues = sorted(r.extra["queue_s"] for r in responses)
    # each request took the server's time (+ loopback overhead), however long it waited for one of the 2 slots
    assert all(DELAY_S <= x < DELAY_S + 0.25 for x in latencies), latencies
    # 8 requests through 2 slots: the last pair waited for three pairs before it, ~3 × 0.3 s
    assert queues[-1] >= 3 * DELAY_S * 0.9 and queues[0] < 0.1, queues
    assert all(r.extra["backoff_s"] == 0 for r in responses)


def test_a_retried_request_counts_only_its_answering_attempt(monkeypatch):
    monkeypatch.setattr(resilience, "_RETRY_BASE_S", 0.2)
    with FakeChatServer(models=["fake-model"]) as server:
        server.script.extend([Reply(status=503, body={"error": "busy"}, delay_s=0.2),
                              Reply(body=completion("0"), delay_s=DELAY_S)])
        (response,) = get_backend("api", BackendConfig(base_url=server.base_url, concurrency=1)).generate(
            _requests(1))
    assert response.error is None and response.retries == 1
    assert DELAY_S <= response.latency_s < DELAY_S + 0.25
    assert response.extra["backoff_s"] > 0  # 0.2 × jitter in [0.5, 1)
    assert response.extra["wire_s"] == pytest.approx(response.latency_s + 0.2, abs=0.2)  # both attempts


def test_the_rows_and_the_summary_keep_the_queue_beside_the_latency(tmp_path):
    import polars as pl

    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare

    data = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"r{i}" for i in range(N)], "user_input": [f"message {i}" for i in range(N)],
                  "toxicity": [0] * N}).write_csv(data)
    with FakeChatServer(models=["org/fake-model"], delay_s=DELAY_S) as slow, \
            FakeChatServer(models=["org/fake-model"]) as fast:
        result = run_compare(CompareConfig(
            model="org/fake-model", dataset=str(data), output_dir=tmp_path / "out", margins=False, chunk_size=N,
            backends=f"api[base_url={fast.base_url};label=fast],api[base_url={slow.base_url};label=slow]",
            backend=BackendConfig(concurrency=SLOTS)))
    tidy = pl.read_parquet(result.run_dir / "results.parquet").filter(pl.col("arm") == "slow")
    assert tidy["latency_s"].max() < DELAY_S + 0.25 and tidy["queue_s"].max() >= 3 * DELAY_S * 0.9
    slow_side = result.summary["backends"]["b"]
    assert slow_side["latency_p50_s"] < DELAY_S + 0.25 and slow_side["queue_p50_s"] >= DELAY_S * 0.9
