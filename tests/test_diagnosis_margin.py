"""The local-model label margin, on SmolLM2 itself (slow: loads the model)."""

from __future__ import annotations

import math

import pytest

from toxcmp.backends import BackendConfig
from toxcmp.backends.local import LocalBackend, render_prompt
from toxcmp.config import GenerationConfig
from toxcmp.diagnosis import NEAR_TIE_NATS, Margin, label_margin
from toxcmp.models import resolve_model
from toxcmp.policies import load_policy
from toxcmp.prompting import build_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded_request():
    request = build_request(load_policy("toxic_simple"), "you are a complete idiot", resolve_model("smollm2-135m"),
                            GenerationConfig(max_new_tokens=8))
    backend = LocalBackend(BackendConfig())
    loaded = backend.load(request.model)
    return backend, loaded, request


def test_margin_agrees_with_what_greedy_generation_chose(loaded_request):
    backend, loaded, request = loaded_request
    response = backend.generate([request])[0]
    first_word = response.raw_text.split()[0]
    prompt = render_prompt(loaded.tokenizer, request)
    for rival in ("0", "1", "toxic"):
        if rival == first_word:
            continue
        margin = label_margin(loaded.model, loaded.tokenizer, prompt, response.raw_text, first_word, rival)
        assert margin is not None and margin.nats > 0, (first_word, rival, margin)  # greedy picked the argmax


def test_margin_is_antisymmetric_and_classified(loaded_request):
    _, loaded, request = loaded_request
    prompt = render_prompt(loaded.tokenizer, request)
    m01 = label_margin(loaded.model, loaded.tokenizer, prompt, "1", "1", "0")
    m10 = label_margin(loaded.model, loaded.tokenizer, prompt, "0", "0", "1")
    assert m01 is not None and m10 is not None and math.isfinite(m01.nats)
    assert m01.nats == pytest.approx(-m10.nats, abs=1e-4)
    assert label_margin(loaded.model, loaded.tokenizer, prompt, "no label here", "1", "0") is None


def test_near_tie_threshold():
    assert Margin(0.5, "1", "0").kind == "near_tie" and Margin(-NEAR_TIE_NATS - 0.1, "1", "0").kind == "true_disagreement"


def test_compare_attaches_margins_to_label_disagreements(loaded_request):
    """The run-level plumbing: a label flip with a local side gets the local model's margin and its kind."""
    from toxcmp.compare import BackendSpec, add_margins
    from toxcmp.compare import SilentObserver

    _, _, request = loaded_request
    row = {"example_id": "e1", "cause": "label_flip", "a_binary": 0, "a_fine": "0", "b_binary": 1, "b_fine": "1",
           "b_raw": "1<|im_end|>", "margin_nats": None, "margin_kind": None}
    untouched = dict(row, example_id="e2", cause=None)
    specs = [BackendSpec("api", "api"), BackendSpec("local", "local")]
    add_margins([row, untouched], specs, [BackendConfig(), BackendConfig()], [request, request],
                [{"example_id": "e1"}, {"example_id": "e2"}], SilentObserver())
    assert isinstance(row["margin_nats"], float) and row["margin_kind"] in ("near_tie", "true_disagreement")
    assert untouched["margin_nats"] is None
