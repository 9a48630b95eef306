"""The `local` backend on real models: the bundled SmolLM2-135M and a tiny random gpt-oss."""

from __future__ import annotations

import json
import re

import pytest

from toxcmp import InferenceBackend, classify, get_model_response
from toxcmp.backends.local_model import LocalModelCache

pytestmark = pytest.mark.slow


def assert_verdict_matches_content(data: dict) -> None:
    """The verdict is read from the content, not invented: a label only where the content has a 0/1 to read,
    parse_ok exactly when there is a label, and a reason exactly when there is not."""
    digits = set(re.findall(r"(?<![0-9A-Za-z])[01](?![0-9A-Za-z])", data["content"]))
    assert data["parse_ok"] == (data["binary_label"] is not None) == (data["parse_error"] is None), data
    if not digits:
        assert data["binary_label"] is None and not data["parse_ok"] and data["parse_error"], data
    if data["binary_label"] is not None:
        assert str(data["binary_label"]) in digits, data


def test_classify_local_smollm_then_cached(cli):
    args = ("classify", "you are an idiot", "--backend", "local", "--model", "smollm2-135m", "--json")
    first = cli(*args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert set(data) >= {"binary_label", "fine_grain_label", "parse_ok", "parse_error", "content", "reasoning",
                         "backend", "model", "policy", "cached", "latency_s"}
    assert data["backend"] == "local" and data["model"] == "smollm2-135m" and data["cached"] is False
    assert data["content"]
    assert_verdict_matches_content(data)
    second = json.loads(cli(*args).stdout)
    assert second["cached"] is True and second["content"] == data["content"]


def test_rich_panel_output(cli):
    result = cli("classify", "hello", "--backend", "local", "--max-new-tokens", "4")
    assert result.exit_code == 0 and "binary label" in result.output and "parse" in result.output


def test_library_api_local_and_model_loaded_once():
    before = LocalModelCache.loads
    a = classify("what topics should i start on youtube", model="smollm2-135m", backend=InferenceBackend.LOCAL,
                 max_new_tokens=8, use_cache=False)
    b = get_model_response("guia de estudo javascript", model="smollm2-135m", backend="local", max_new_tokens=8,
                           use_cache=False)
    assert a.backend == "local" and b.content and not b.cached and b.latency_s > 0
    assert LocalModelCache.loads - before <= 1  # second call reused the loaded model
    assert len([k for k in LocalModelCache.loaded() if k[0] == "smollm2-135m"]) == 1


def test_greedy_is_deterministic():
    kwargs = dict(model="smollm2-135m", backend="local", max_new_tokens=12, use_cache=False)
    assert get_model_response("Tell me a joke", **kwargs).content == get_model_response("Tell me a joke", **kwargs).content


def test_text_longer_than_context_is_a_clear_error(cli):
    long_text = "idiot " * 9000  # > 8192 tokens of SmolLM2 context
    result = cli("classify", long_text, "--backend", "local", "--json")
    assert result.exit_code == 4
    data = json.loads(result.stdout)
    assert "exceeds the model's 8192-token context" in data["error"] and data["parse_ok"] is False


def test_cache_clear_models_frees_loaded_models(cli):
    get_model_response("hi", model="smollm2-135m", backend="local", max_new_tokens=2, use_cache=False)
    assert LocalModelCache.loaded()
    result = cli("cache", "clear", "--models")
    assert result.exit_code == 0 and LocalModelCache.loaded() == []


@pytest.fixture(scope="module")
def tiny_gptoss(tmp_path_factory):
    from tests.helpers.tiny_gptoss import build_tiny_gptoss

    return build_tiny_gptoss(tmp_path_factory.mktemp("gpt-oss-tiny") / "model")


def test_gpt_oss_path_render_generate_decode_parse(tiny_gptoss, cli):
    rendered = json.loads(cli("render", "hello there", "--model", str(tiny_gptoss), "--reasoning-effort", "high",
                              "--json").stdout)
    prompt = rendered["local_prompt"]
    assert "Reasoning: high" in prompt and "<|start|>developer<|message|># Instructions" in prompt
    assert prompt.endswith("<|start|>user<|message|>hello there<|end|><|start|>assistant")
    assert rendered["api_request"]["reasoning_effort"] == "high"

    response = get_model_response("hello there", model=str(tiny_gptoss), backend="local", max_new_tokens=40,
                                  reasoning_effort="high", use_cache=False)
    assert response.ok and response.raw_text and response.finish_reason in ("stop", "length")
    result = classify("hello there", model=str(tiny_gptoss), backend="local", max_new_tokens=40,
                      reasoning_effort="high", use_cache=False)
    # random weights: the answer is noise, and the parser must say so rather than invent a label
    assert result.content == response.content
    final = "<|channel|>final<|message|>" in response.raw_text or "assistantfinal" in response.raw_text
    if not final:
        assert result.content == "" and not result.parse_ok and result.binary_label is None and result.parse_error
    assert_verdict_matches_content(result.to_dict())


def test_gpt_oss_special_tokens_survive_decoding(tiny_gptoss):
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend

    backend = LocalBackend(BackendConfig())
    from toxcmp.domain.models import resolve_model

    loaded = backend.load(resolve_model(str(tiny_gptoss)))
    ids = loaded.tokenizer("<|channel|>final<|message|>1<|return|>", add_special_tokens=False)["input_ids"]
    assert loaded.tokenizer.decode(ids, skip_special_tokens=False) == "<|channel|>final<|message|>1<|return|>"


def test_gpt_oss_batched_and_prefix_match_naive(tiny_gptoss):
    """Sliding-window layers and sinks: the window-aware shared prefix runs, and outputs match the reference."""
    from toxcmp.backends import BackendConfig, shared_prefix
    from toxcmp.backends.local import LocalBackend
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    spec = resolve_model(str(tiny_gptoss))
    generation = GenerationConfig.from_defaults(max_new_tokens=12, reasoning_effort="low")
    texts = ["hello there", "you idiot", "how do I bake bread?", "a much longer message about the weather today"]
    requests = [build_request(load_policy("toxic_simple"), t, spec, generation) for t in texts]
    naive = [r.raw_text for r in LocalBackend(BackendConfig(strategy="naive")).generate(requests)]
    assert shared_prefix.prefix_reusable(LocalBackend(BackendConfig()).load(spec).model) is None
    for strategy in ("batched", "prefix"):
        out = LocalBackend(BackendConfig(strategy=strategy)).generate(requests)
        assert [r.error for r in out] == [None] * 4
        assert [r.raw_text for r in out] == naive, strategy
        assert all(r.extra["strategy"] == strategy for r in out)  # no fallback for gpt-oss any more
