"""Issue 24, step 3: an in-process arm's label probability is read where its answer writes the label — the value
of a JSON policy's label key, or the first token after Harmony's final-channel header — from its model's whole
next-token distribution after the exact prompt and the answer's tokens before it. The oracle is a plain forward
pass written here (`model(ids).logits`, softmax), its label tokens found by a regular expression over the decoded
vocabulary; rows whose answer writes no label there are counted, not guessed."""

from __future__ import annotations

import re

import pytest

from toxcmp.backends import BackendConfig
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.run.arms import Arm
from toxcmp.run.label_scoring import local_label_probs
from toxcmp.run.specs import BackendSpec


def _oracle(model, tokenizer, prompt: str, answer_ids: list[int], label_token: int, before: str) -> float:
    """p(violating) = p(1) / (p(0) + p(1)) at the label token: every vocabulary token that spells `before`, then
    (after optional white space) the digit, then nothing or a non-word character."""
    import torch

    context = tokenizer(prompt, add_special_tokens=False)["input_ids"] + answer_ids[:label_token]
    with torch.inference_mode():
        probs = torch.softmax(model(torch.tensor([context])).logits[0, -1].float(), dim=-1)
    mass = {"0": 0.0, "1": 0.0}
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        found = re.fullmatch(re.escape(before) + r"\s*([01])(?:[^\w].*)?", text, re.DOTALL)
        if found:
            mass[found.group(1)] += float(probs[token_id])
    return mass["1"] / (mass["0"] + mass["1"])


def _arm_rows(spec, policy, raws):
    generation = GenerationConfig.from_defaults(max_new_tokens=8)
    requests = [build_request(policy, f"text {i}", spec, generation) for i in range(len(raws))]
    examples = [{"example_id": f"e{i}"} for i in range(len(raws))]
    rows = [{"example_id": f"e{i}", "arm": "local", "raw": raw} for i, raw in enumerate(raws)]
    arm = Arm(BackendSpec("local", "local"), spec, policy, generation, BackendConfig(device="cpu", dtype="float32"))
    return arm, rows, requests, examples


@pytest.mark.slow
def test_a_json_answer_is_read_at_its_label_value():
    from toxcmp.backends.local import LocalBackend

    policy = load_policy("toxic_chat_claude_1")
    assert policy.output == "json"
    raws = ['{"violation": 1, "category": "toxic"}', '{"category": "x", "violation":0}', '{"category": "x"}']
    arm, rows, requests, examples = _arm_rows(resolve_model("smollm2-135m"), policy, raws)
    p, missed = local_label_probs(arm, rows, requests, examples)
    assert set(p) == {"e0", "e1"} and missed == {"no_label_position": 1, "labels_not_in_top_k": 0}
    backend = LocalBackend(BackendConfig(device="cpu", dtype="float32"))
    loaded = backend.load(requests[0].model)
    tokenizer = loaded.tokenizer
    for i, (label_text, before) in enumerate((("1", ""), ("0", ""))):  # SmolLM2 splits ' ' and digits
        ids = tokenizer(raws[i], add_special_tokens=False)["input_ids"]
        pieces = [tokenizer.decode([t]) for t in ids]
        at = pieces.index(label_text)  # by hand: the token that writes the label value
        prompt = tokenizer.apply_chat_template(requests[i].chat_messages(), add_generation_prompt=True, tokenize=False)
        assert p[f"e{i}"] == pytest.approx(_oracle(loaded.model, tokenizer, prompt, ids, at, before), abs=1e-5)


@pytest.mark.slow
def test_a_harmony_answer_is_read_after_its_final_channel_header(tmp_path):
    from tests.helpers.tiny_gptoss import build_tiny_gptoss
    from toxcmp.backends.local import LocalBackend

    spec = resolve_model(str(build_tiny_gptoss(tmp_path / "model")))
    assert spec.harmony
    final = "<|start|>assistant<|channel|>final<|message|>"
    raws = [f"<|channel|>analysis<|message|>It says 1 maybe.<|end|>{final}0<|return|>",
            f"<|channel|>analysis<|message|>Fine.<|end|>{final}1<|return|>",
            "<|channel|>analysis<|message|>Cut off before a final mess"]
    arm, rows, requests, examples = _arm_rows(spec, load_policy("toxic_simple"), raws)
    p, missed = local_label_probs(arm, rows, requests, examples)
    assert set(p) == {"e0", "e1"} and missed["no_label_position"] == 1
    loaded = LocalBackend(BackendConfig(device="cpu", dtype="float32")).load(spec)
    tokenizer = loaded.tokenizer
    for i in (0, 1):
        ids = tokenizer(raws[i], add_special_tokens=False)["input_ids"]
        header = tokenizer(raws[i][: raws[i].index(final) + len(final)], add_special_tokens=False)["input_ids"]
        assert ids[: len(header)] == header  # the special tokens are single tokens: the label token follows them
        prompt = tokenizer.apply_chat_template(requests[i].chat_messages(), add_generation_prompt=True, tokenize=False,
                                               **requests[i].template_options())
        assert p[f"e{i}"] == pytest.approx(_oracle(loaded.model, tokenizer, prompt, ids, len(header), ""), abs=1e-5)
