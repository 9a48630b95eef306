"""The local-model label margin, on SmolLM2 itself (slow: loads the model)."""

from __future__ import annotations

import math

import pytest

from toxcmp.backends import BackendConfig
from toxcmp.backends.local import LocalBackend
from toxcmp.backends.local_model import render_prompt
from toxcmp.config import GenerationConfig
from toxcmp.analysis.diagnosis import NEAR_TIE_NATS, Margin, label_margin
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

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


def test_margin_equals_the_log_prob_difference_computed_by_hand(loaded_request):
    """log p("1") - log p("0") for the token right after the prompt, from one plain forward pass over the prompt:
    softmax by hand (exp / sum) on the last position's logits, the label tokens looked up in the vocabulary."""
    import torch

    _, loaded, request = loaded_request
    tok, model = loaded.tokenizer, loaded.model
    prompt = render_prompt(tok, request)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    one, zero = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("0")
    assert tok(prompt + "1", add_special_tokens=False)["input_ids"] == prompt_ids + [one]  # the label is one token
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids])).logits[0, -1].double()
    probs = torch.exp(logits - logits.max()) / torch.exp(logits - logits.max()).sum()
    expected = math.log(probs[one].item()) - math.log(probs[zero].item())
    m01 = label_margin(model, tok, prompt, "1", "1", "0")
    m10 = label_margin(model, tok, prompt, "0", "0", "1")
    assert m01 is not None and m10 is not None
    assert m01.nats == pytest.approx(expected, abs=1e-3) and m10.nats == pytest.approx(-expected, abs=1e-3)
    assert abs(expected) > 1e-2  # a real difference, so a sign error cannot hide
    assert (m01.own, m01.other) == ("1", "0") and m01.kind == ("near_tie" if abs(expected) < NEAR_TIE_NATS
                                                                else "true_disagreement")
    assert label_margin(model, tok, prompt, "no label here", "1", "0") is None


def test_near_tie_threshold():
    assert Margin(0.5, "1", "0").kind == "near_tie" and Margin(-NEAR_TIE_NATS - 0.1, "1", "0").kind == "true_disagreement"


def test_compare_attaches_margins_to_label_disagreements(loaded_request):
    """The run-level plumbing: a label flip with a local side gets the local model's margin and its kind."""
    from toxcmp.run.arms import Arm
    from toxcmp.run.specs import BackendSpec
    from toxcmp.run.config import SilentObserver
    from toxcmp.run.local_scoring import add_margins
    from toxcmp.domain.policies import load_policy

    _, _, request = loaded_request
    row = {"example_id": "e1", "cause": "label_flip", "a_binary": 0, "a_fine": "0", "b_binary": 1, "b_fine": "1",
           "b_raw": "1<|im_end|>", "margin_nats": None, "margin_kind": None}
    untouched = dict(row, example_id="e2", cause=None)
    arms = [Arm(BackendSpec(name, name), request.model, load_policy("toxic_simple"), request.generation, BackendConfig())
            for name in ("api", "local")]
    add_margins([row, untouched], arms, [request, request], [request, request],
                [{"example_id": "e1"}, {"example_id": "e2"}], SilentObserver())
    assert isinstance(row["margin_nats"], float) and row["margin_kind"] in ("near_tie", "true_disagreement")
    assert untouched["margin_nats"] is None
