"""api backend error paths against a scripted loopback HTTP server (what a real server won't do on demand)."""

from __future__ import annotations

import time

import pytest

from toxcmp.backends import BackendConfig, get_backend
from toxcmp.backends.http import resilience as api_module
from toxcmp.config import GenerationConfig
from toxcmp.errors import BackendError
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

SPEC = ModelSpec(name="fake-model", model_id="fake-model", revision="test")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_module, "_RETRY_BASE_S", 0.01)


@pytest.fixture
def server():
    with FakeChatServer(models=["fake-model", "openai/gpt-oss-20b"]) as s:
        yield s


def _backend(server, **kw):
    return get_backend("api", BackendConfig(base_url=server.base_url, **kw))


def _requests(n=1, spec=SPEC, **gen):
    policy = load_policy("toxic_simple")
    return [build_request(policy, f"text number {i}", spec, GenerationConfig(**gen)) for i in range(n)]


def test_sends_the_same_messages_greedy_and_seeded(server):
    req = _requests(spec=resolve_model("gpt-oss-20b"), reasoning_effort="medium")[0]
    server.models.append("openai/gpt-oss-20b")
    [resp] = _backend(server).generate([req])
    assert resp.ok and resp.content == "0"
    sent = server.requests[-1]
    assert sent["messages"] == req.chat_messages()
    assert sent["temperature"] == 0.0 and sent["seed"] == 0 and sent["reasoning_effort"] == "medium"
    assert sent["model"] == "openai/gpt-oss-20b"


def test_non_harmony_models_get_no_reasoning_effort(server):
    _backend(server).generate(_requests())
    assert "reasoning_effort" not in server.requests[-1]


def test_429_with_retry_after_is_honoured(server):
    server.script.append(Reply(status=429, headers={"Retry-After": "0.3"}, body={"error": "slow down"}))
    backend = _backend(server)
    started = time.perf_counter()
    [resp] = backend.generate(_requests())
    assert resp.ok and resp.retries == 1 and time.perf_counter() - started >= 0.3
    assert backend.stats["retries"] == 1


def test_429_without_retry_after_and_503_then_success(server):
    server.script.extend([Reply(status=429, body={"error": "x"}), Reply(status=503, body="unavailable")])
    [resp] = _backend(server).generate(_requests())
    assert resp.ok and resp.retries == 2


def test_gives_up_after_max_retries_and_records_error(server):
    server.script.extend([Reply(status=503, body={"error": {"message": "overloaded"}})] * 3)
    backend = _backend(server, max_retries=2)
    [resp] = backend.generate(_requests())
    assert not resp.ok and "HTTP 503" in resp.error and "overloaded" in resp.error and "gave up after 2" in resp.error
    assert resp.retries == 2 and backend.stats["errors"] == 1


def test_timeout_is_retried_then_recorded(server):
    server.script.extend([Reply(delay_s=1.5), Reply(delay_s=1.5)])
    [resp] = _backend(server, timeout_s=0.3, max_retries=1).generate(_requests())
    assert not resp.ok and "timed out" in resp.error and resp.retries == 1


def test_malformed_json_is_an_error_not_a_crash(server):
    server.script.append(Reply(body="{this is not json"))
    [resp] = _backend(server).generate(_requests())
    assert not resp.ok and "malformed" in resp.error


def test_provider_error_body_is_reported_without_retrying_400(server):
    server.script.append(Reply(status=400, body={"error": {"message": "context length exceeded by provider"}}))
    [resp] = _backend(server).generate(_requests())
    assert not resp.ok and "context length exceeded by provider" in resp.error and resp.retries == 0


@pytest.mark.parametrize("body,content,reasoning", [
    (completion("1"), "1", ""),  # no reasoning field at all
    (completion("1", reasoning="thinking", reasoning_key="reasoning"), "1", "thinking"),
    (completion("0", reasoning="thought", reasoning_key="reasoning_content"), "0", "thought"),
    (completion("analysisThe user is polite.assistantfinal0"), "0", "The user is polite."),
    (completion("<|channel|>analysis<|message|>hm<|end|><|start|>assistant<|channel|>final<|message|>1<|return|>"), "1", "hm"),
])
def test_reasoning_fields_and_harmony_leaking_into_content(server, body, content, reasoning):
    server.script.append(Reply(body=body))
    [resp] = _backend(server).generate(_requests(spec=resolve_model("gpt-oss-20b")))
    assert (resp.content, resp.reasoning) == (content, reasoning)


def test_401_is_one_clear_error_and_token_never_echoed(server):
    server.script.append(Reply(status=401, body={"error": "bad token hf_SENTINELabcdefgh"}))
    with pytest.raises(BackendError) as info:
        _backend(server, token="hf_SENTINELabcdefgh").generate(_requests())
    assert "HF_TOKEN" in str(info.value) and "SENTINEL" not in str(info.value)


def test_model_not_served_is_named(server):
    with pytest.raises(BackendError, match="does not serve model 'other/model'.*fake-model"):
        _backend(server).generate(_requests(spec=ModelSpec(name="x", model_id="other/model")))


def test_concurrency_is_bounded_and_order_kept(server):
    server.delay_s = 0.05
    replies = [Reply(body=completion(str(i % 2)), delay_s=0.01 * (5 - i % 5)) for i in range(20)]
    server.script.extend(replies)
    seen = []
    responses = _backend(server, concurrency=4).generate(_requests(20), on_response=lambda i, r: seen.append(i))
    assert server.max_in_flight <= 4 and len(responses) == 20 and sorted(seen) == list(range(20))
    assert [r.prompt_hash for r in responses] == [r.prompt_hash for r in _requests(20)]


def test_retry_after_http_date_and_backoff_bounds():
    from email.utils import formatdate

    assert 0 <= api_module._retry_after_s({"retry-after": formatdate(time.time() + 2, usegmt=True)}) <= 2.5
    assert api_module.backoff_delay(0, 3.0) == 3.0
    delays = [api_module.backoff_delay(a, None, base=1.0) for a in range(8)]
    assert all(0.5 * min(30, 2**a) <= d <= min(30, 2**a) for a, d in enumerate(delays))


@pytest.mark.serial  # a speedup measured against the wall clock
def test_bench_api_reports_speedup():
    """Checked against the fake server's fixed delay and the test's own clock, not the bench's arithmetic."""
    from toxcmp.bench.api import bench_api

    n, delay = 32, 0.05
    started = time.perf_counter()
    result = bench_api(n_requests=n, delay_s=delay)
    wall = time.perf_counter() - started
    assert result.errors == 0 and result.requests == n
    # one request at a time cannot beat the server's delay; 16 at a time cannot beat 16 x that
    assert result.rps_c1 <= 1 / delay and result.rps_c16 <= 16 / delay
    # the time the two rates imply fits inside what the test measured around the whole bench
    assert n / result.rps_c1 + n / result.rps_c16 <= wall
    assert n * delay <= wall
    # concurrency really overlaps the waits: ideal 16x here (2 waves of 16 vs 32 serial); loaded CI still > 3x
    assert 3 <= result.speedup <= 16 * 1.05
