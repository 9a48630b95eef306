"""The engine behind a base URL (issue 23): asked of the server the way each engine documents itself, sent the
settings that make its greedy decoding greedy, part of the arm's identity, said in one line when not known."""

from __future__ import annotations

import pytest

from toxcmp.backends import BackendConfig, get_backend
from toxcmp.backends.api_options import ApiOptions
from toxcmp.backends.engines import detect_engine
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.errors import UsageError
from toxcmp.testing.fake_server import FakeChatServer

SPEC = ModelSpec(name="fake-model", model_id="fake-model", revision="test")

# how each engine answers about itself (the engines' own endpoints and /v1/models `owned_by`)
SELF_DESCRIPTIONS = [
    ("llama-cpp-python", {"owned_by": "me"}),  # llama_cpp/server/app.py lists its model as owned by "me"
    ("llama.cpp", {"owned_by": "llamacpp"}),
    ("llama.cpp", {"routes": {"/props": {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 4}}}),
    ("vllm", {"owned_by": "vllm"}),
    ("vllm", {"routes": {"/version": {"version": "0.10.1"}}}),
    ("sglang", {"routes": {"/get_server_info": {"version": "0.4.9", "tp_size": 1}}}),
    ("tgi", {"routes": {"/info": {"model_id": "openai/gpt-oss-20b", "max_input_tokens": 4095, "version": "3.3.4"}}}),
    ("ollama", {"routes": {"/api/version": {"version": "0.11.4"}}}),
    ("unknown", {}),
]


@pytest.mark.parametrize("engine, describes", SELF_DESCRIPTIONS)
def test_the_engine_is_read_off_what_the_server_says(engine, describes):
    with FakeChatServer(models=["fake-model"], **describes) as server:
        assert detect_engine(server.base_url)[0] == engine


def _sent(server, **options) -> dict:
    policy = load_policy("toxic_simple")
    resolved, note = ApiOptions.build(BackendConfig(base_url=server.base_url), options).resolve(SPEC)
    backend = get_backend("api", resolved)
    backend.generate([build_request(policy, "hello", SPEC, GenerationConfig())])
    return {"body": server.requests[-1], "note": note, "options": resolved}


def test_a_users_llama_cpp_python_server_is_sent_repeat_penalty_1():
    with FakeChatServer(models=["fake-model"], owned_by="me") as server:
        sent = _sent(server)
    assert sent["options"].engine == "llama-cpp-python"
    assert sent["body"]["repeat_penalty"] == 1.0 and sent["body"]["temperature"] == 0.0
    assert "the engine is llama-cpp-python (GET /v1/models: owned_by names llama-cpp-python)" in sent["note"]
    assert "repeat_penalty=1" in sent["note"]


def test_vllm_gets_its_own_name_for_it_and_an_unknown_server_nothing_extra_but_a_warning():
    with FakeChatServer(models=["fake-model"], owned_by="vllm") as server:
        vllm = _sent(server)
    with FakeChatServer(models=["fake-model"]) as server:
        unknown = _sent(server)
    assert vllm["body"]["repetition_penalty"] == 1.0 and "repeat_penalty" not in vllm["body"]
    assert not {"repeat_penalty", "repetition_penalty"} & set(unknown["body"])
    assert unknown["options"].engine == "unknown"
    assert "the engine is not known" in unknown["note"] and "repeat_penalty 1.1" in unknown["note"]


def test_a_named_engine_is_not_asked_and_generic_sends_nothing():
    with FakeChatServer(models=["fake-model"], owned_by="me") as server:
        named = _sent(server, engine="vllm")
        generic = _sent(server, engine="generic")
    assert named["note"] is None and named["body"]["repetition_penalty"] == 1.0
    assert generic["options"].engine == "generic" and "repeat_penalty" not in generic["body"]


def test_the_engine_is_part_of_the_identity():
    a = ApiOptions(base_url="http://127.0.0.1:8000/v1", engine="llama-cpp-python").identity()
    b = ApiOptions(base_url="http://127.0.0.1:8000/v1", engine="unknown").identity()
    assert a != b and a["engine"] == "llama-cpp-python"


@pytest.mark.parametrize("written, match", [
    ({"base_url": "localhost:9"}, "has no scheme — add http://"),
    ({"base_url": "http://127.0.0.1:9/v1", "engine": "vlm"}, "unknown engine 'vlm'"),
    ({"engine": "vllm"}, "engine names the server behind a base URL"),
])
def test_bad_options_are_one_line(written, match):
    with pytest.raises(UsageError) as info:
        ApiOptions.build(BackendConfig(), written).check()
    assert match in info.value.one_line()


def test_a_dead_url_says_nothing_about_engines():
    options, note = ApiOptions(base_url="http://127.0.0.1:9/v1").resolve(resolve_model("gpt-oss-20b"))
    assert note is None and options.engine == "unknown"  # the preflight reports the dead server in its own words
