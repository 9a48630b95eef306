"""The api backend's routes: Inference Providers through the Hugging Face router (the same OpenAI-compatible client
as a base URL), and `api_server` picking a spawned-server subclass. Against the loopback fake server."""

from __future__ import annotations

import pytest

from toxcmp.backends import BackendConfig, SpawnsServer, get_backend, providers
from toxcmp.backends.api import ApiBackend
from toxcmp.backends.spawned import SpawnedServerBackend, TransformersServeBackend
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.errors import BackendError, UnknownNameError
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

SPEC = ModelSpec(name="fake-model", model_id="org/fake-model", revision="test")
TOKEN = "hf_ROUTEtoken0123456789"


def _requests(n=1):
    return [build_request(load_policy("toxic_simple"), f"text {i}", SPEC, GenerationConfig()) for i in range(n)]


@pytest.fixture
def router(monkeypatch):
    """The fake server stands in for https://router.huggingface.co/v1."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with FakeChatServer(models=["org/fake-model"]) as server:
        monkeypatch.setattr(providers, "ROUTER_URL", server.base_url)
        yield server


@pytest.mark.parametrize("provider, model", [("auto", "org/fake-model"), ("groq", "org/fake-model:groq")])
def test_providers_go_through_the_router_with_the_token_and_name_who_served(router, provider, model):
    router.script.append(Reply(body=completion("1"), headers={"x-inference-provider": "groq"}))
    backend = get_backend("api", BackendConfig(provider=provider, token=TOKEN))
    [response] = backend.generate(_requests())
    assert response.ok and response.content == "1" and response.served_by == "groq"
    assert router.requests[-1]["model"] == model and router.requests[-1]["stream"] is False
    assert {k.lower(): v for k, v in router.headers_seen[-1].items()}["authorization"] == f"Bearer {TOKEN}"
    assert backend.endpoint == f"hf-inference-providers:{provider}"  # the cache identity did not change


def test_a_provider_error_names_the_provider_when_the_router_does(router):
    router.script.append(Reply(status=400, body={"error": {"message": "bad request"}},
                               headers={"x-inference-provider": "together"}))
    [response] = get_backend("api", BackendConfig(token=TOKEN)).generate(_requests())
    assert not response.ok and "bad request" in response.error and response.served_by == "together"


def test_offline_blocks_providers_before_anything_is_sent(router, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE=1 blocks Inference Providers"):
        get_backend("api", BackendConfig(token=TOKEN)).generate(_requests())
    assert router.requests == []


def test_an_unknown_provider_lists_the_known_ones():
    assert "auto" in providers.valid_providers() and "groq" in providers.valid_providers()
    with pytest.raises(UnknownNameError) as info:
        ApiBackend(BackendConfig(provider="nope", token=TOKEN))
    assert "groq" in info.value.valid and "auto" in info.value.valid


def test_api_server_picks_the_spawned_subclass_and_only_it_spawns():
    serve = get_backend("api", BackendConfig(api_server="local"))
    assert type(serve) is TransformersServeBackend and isinstance(serve, ApiBackend) and serve.name == "api"
    assert isinstance(serve, SpawnsServer) and serve.streams and serve.endpoint == "transformers-serve"
    remote = ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1"))
    assert type(remote) is ApiBackend and not isinstance(remote, (SpawnsServer, SpawnedServerBackend))
    assert not remote.streams
    for value in ("auto", "none", None):
        assert type(ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1", api_server=value))) is ApiBackend


def test_a_spawned_server_never_gets_a_token(monkeypatch):
    from toxcmp.backends import server as server_module

    class StandIn:
        capacity, threads, served_model = 1, 1, "org/fake-model"

        def __init__(self, fake):
            self.fake = fake

        base_url = property(lambda self: self.fake.base_url)

        def start(self):
            return self

        def stop(self):
            pass

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeChatServer(models=["org/fake-model"]) as fake:
        monkeypatch.setattr(server_module, "local_api_server", lambda spec, cache_dir=None, threads=None: StandIn(fake))
        backend = get_backend("api", BackendConfig(api_server="local", token=TOKEN))
        [response] = backend.generate(_requests())
        backend.close()
    assert response.ok and fake.requests[-1]["stream"] is True
    assert all("authorization" not in {k.lower() for k in h} for h in fake.headers_seen)
