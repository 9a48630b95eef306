from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest

from toxcmp.backends import BackendConfig
from toxcmp.cache import ResponseCache, cache_key
from toxcmp.config import GenerationConfig
from toxcmp.models import resolve_model
from toxcmp.policies import load_policy
from toxcmp.prompting import build_request
from toxcmp.results import ModelResponse
from toxcmp.runner import run_requests


class CountingEchoBackend:
    """A test double for the cache logic: echoes the user text, counts calls. Not a model."""

    name = "echo"

    def __init__(self, config: BackendConfig | None = None):
        self.calls = 0
        self.fail = False

    @property
    def endpoint(self) -> str:
        return "echo://"

    def generate(self, requests, on_response=None):
        out = []
        for i, r in enumerate(requests):
            self.calls += 1
            resp = ModelResponse(content="" if self.fail else r.messages[-1][1], reasoning="", raw_text=r.messages[-1][1],
                                 backend=self.name, model=r.model.model_id, latency_s=0.0,
                                 error="boom" if self.fail else None, prompt_hash=r.prompt_hash)
            out.append(resp)
            if on_response:
                on_response(i, resp)
        return out

    def close(self):
        pass


def _request(text="hello", model="smollm2-135m", **gen):
    return build_request(load_policy("toxic_simple"), text, resolve_model(model), GenerationConfig(**gen))


def test_key_covers_everything_that_changes_an_answer():
    base = _request()
    key = cache_key("local", "cpu", base)
    variants = [
        cache_key("api", "cpu", base),
        cache_key("local", "cuda", base),
        cache_key("local", "cpu", _request(text="hello!")),
        cache_key("local", "cpu", _request(model="gpt-oss-20b")),
        cache_key("local", "cpu", replace(base, model=replace(base.model, revision="other"))),
        cache_key("local", "cpu", _request(max_new_tokens=7)),
        cache_key("local", "cpu", _request(model="gpt-oss-20b", reasoning_effort="high")),
        cache_key("local", "cpu", build_request(load_policy("toxic_chat_claude_1"), "hello", base.model, GenerationConfig())),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert cache_key("local", "cpu", _request()) == key  # deterministic


def test_roundtrip_hit_miss_and_errors_not_cached(tmp_path):
    cache = ResponseCache(tmp_path)
    backend = CountingEchoBackend()
    reqs = [_request("a"), _request("b")]
    first = run_requests(backend, reqs, cache)
    second = run_requests(backend, reqs, cache)
    assert backend.calls == 2 and [r.cached for r in first] == [False, False] and [r.cached for r in second] == [True, True]
    assert [r.content for r in second] == ["a", "b"]
    backend.fail = True
    run_requests(backend, [_request("c")], cache)
    run_requests(backend, [_request("c")], cache)
    assert backend.calls == 4  # the error was not cached


def test_corrupted_entry_is_ignored_and_recomputed(tmp_path):
    cache = ResponseCache(tmp_path)
    backend = CountingEchoBackend()
    req = _request("x")
    run_requests(backend, [req], cache)
    key = cache_key(backend.name, backend.endpoint, req)
    cache._cache.set(key, "{not json")
    again = run_requests(backend, [req], cache)
    assert backend.calls == 2 and again[0].content == "x" and not again[0].cached
    cache._cache.set(key, json.dumps({"response": {"content": 1}}))
    run_requests(backend, [req], cache)
    assert backend.calls == 3
    assert run_requests(backend, [req], cache)[0].cached


def test_corrupted_database_is_moved_aside(tmp_path):
    (tmp_path / "responses").mkdir()
    (tmp_path / "responses" / "cache.db").write_bytes(b"this is not sqlite" * 100)
    cache = ResponseCache(tmp_path)
    assert len(cache) == 0
    assert list(tmp_path.glob("responses.corrupt-*"))


def test_info_and_selective_clear(tmp_path):
    cache = ResponseCache(tmp_path)
    backend = CountingEchoBackend()
    run_requests(backend, [_request("a"), _request("b")], cache)
    run_requests(backend, [_request("a", model="gpt-oss-20b")], cache)
    groups = {(g.backend, g.model): g for g in cache.info()}
    assert groups[("echo", "smollm2-135m")].entries == 2 and groups[("echo", "openai/gpt-oss-20b")].entries == 1
    assert all(g.bytes > 0 for g in groups.values())
    assert cache.clear(model="openai/gpt-oss-20b") == 1
    assert cache.clear(backend="other") == 0
    assert cache.clear() == 2 and len(cache) == 0


SENTINEL = "hf_SENTINELcacheTOKEN0123456789"


@pytest.mark.parametrize("how", ["--token", "HF_TOKEN"])
def test_token_never_stored(how, cli, isolated_env, monkeypatch):
    """A real token path: classify through the api backend with a token, then scan every file the cache wrote."""
    from toxcmp.fake_server import FakeChatServer

    with FakeChatServer(models=["fake/model"]) as server:
        if how == "--token":
            args = ("--base-url", server.base_url, "--token", SENTINEL)
        else:
            monkeypatch.setenv("HF_TOKEN", SENTINEL)
            monkeypatch.setattr("toxcmp.backends.api._is_hf_host", lambda url: True)  # HF_TOKEN goes only to HF hosts
            args = ("--base-url", server.base_url)
        result = cli("classify", "hello token", "--backend", "api", "--model", "fake/model", *args, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["cached"] is False
        sent = [{k.lower(): v for k, v in h.items()}.get("authorization") for h in server.headers_seen]
        assert sent == [f"Bearer {SENTINEL}"]  # the token really went out with the request
        again = cli("classify", "hello token", "--backend", "api", "--model", "fake/model", *args, "--json")
        assert json.loads(again.stdout)["cached"] is True  # so the cache really holds the response
    assert SENTINEL not in result.output
    files = [p for p in isolated_env.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert SENTINEL.encode() not in data and b"SENTINELcache" not in data and b"hf_" not in data, path


def test_backend_config_repr_hides_token():
    assert "hf_secret" not in repr(BackendConfig(token="hf_secret"))


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_empty_text_rejected(bad):
    from toxcmp.errors import UsageError

    with pytest.raises(UsageError, match="empty"):
        _request(bad)


def test_sqlite_is_really_used(tmp_path):
    ResponseCache(tmp_path).close()
    con = sqlite3.connect(tmp_path / "responses" / "cache.db")
    assert con.execute("select count(*) from Cache").fetchone() == (0,)


def test_third_party_backend_via_entry_point(monkeypatch, cli):
    from importlib.metadata import EntryPoint

    import toxcmp.backends as backends

    plugin = EntryPoint(name="echo", value="tests.test_cache:CountingEchoBackend", group=backends.ENTRY_POINT_GROUP)
    monkeypatch.setattr(backends, "entry_points", lambda group: [plugin] if group == backends.ENTRY_POINT_GROUP else [])
    assert "echo" in backends.backend_names()
    engine = backends.get_backend("echo")
    assert engine.name == "echo" and isinstance(engine, backends.Backend)
    listed = cli("backends", "list", "--json")
    assert "echo" in listed.stdout
    result = cli("classify", "hello plugin", "--backend", "echo", "--json")
    assert json.loads(result.stdout)["content"] == "hello plugin"
