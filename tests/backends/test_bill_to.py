"""`bill_to`: the organization an Inference Providers request is billed to, sent as the router's `X-HF-Bill-To`
header (what huggingface_hub's `InferenceClient(bill_to=...)` sends) and to no other server. Against the
loopback fake server standing in for the router and for a base URL."""

from __future__ import annotations

import pytest

from toxcmp.backends import BackendConfig, get_backend, providers
from toxcmp.backends.api import ApiBackend
from toxcmp.backends.api_options import ApiOptions
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.errors import UsageError
from toxcmp.run.specs import parse_backend_spec
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

SPEC = ModelSpec(name="fake-model", model_id="org/fake-model", revision="test")
TOKEN = "hf_BILLtoken0123456789"


def _request():
    return [build_request(load_policy("toxic_simple"), "text", SPEC, GenerationConfig())]


def _headers(server: FakeChatServer) -> dict[str, str]:
    return {k.lower(): v for k, v in server.headers_seen[-1].items()}


@pytest.fixture
def router(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with FakeChatServer(models=["org/fake-model"]) as server:
        monkeypatch.setattr(providers, "ROUTER_URL", server.base_url)
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_the_router_is_told_who_is_billed(router, stream):
    router.script.append(Reply(body=completion("1")))
    options = parse_backend_spec(f"api[provider=groq;bill_to=my-org;stream={str(stream).lower()}]").build(
        BackendConfig(token=TOKEN))
    [response] = get_backend("api", options).generate(_request())
    assert response.ok
    assert _headers(router)["x-hf-bill-to"] == "my-org"
    assert _headers(router)["authorization"] == f"Bearer {TOKEN}"


def test_without_bill_to_the_router_gets_no_such_header(router):
    get_backend("api", BackendConfig(provider="groq", token=TOKEN)).generate(_request())
    assert "x-hf-bill-to" not in _headers(router)


def test_a_base_url_never_gets_it():
    with FakeChatServer(models=["org/fake-model"]) as server:
        # built directly, past the spec check below: the backend itself still sends it to the router only
        backend = ApiBackend(ApiOptions(base_url=server.base_url, bill_to="my-org"))
        [response] = backend.generate(_request())
    assert response.ok
    assert "x-hf-bill-to" not in _headers(server)


@pytest.mark.parametrize("written, message", [
    ("api[base_url=http://127.0.0.1:9/v1;bill_to=my-org]", "it is not sent to a base URL or a spawned server"),
    ("api[api_server=local;bill_to=my-org]", "it is not sent to a base URL or a spawned server"),
    ("api[bill_to=my org]", "bill_to must be an organization name"),
])
def test_bill_to_where_it_cannot_go_is_a_usage_error(written, message):
    with pytest.raises(UsageError, match=message):
        parse_backend_spec(written).build(BackendConfig())


def test_bill_to_does_not_change_an_answer():
    assert ApiOptions.declared()["bill_to"].metadata["changes_answer"] is False
    assert "bill_to" not in ApiOptions(bill_to="my-org").identity()
