"""Where two texts part, and the local model's score of both next tokens there."""

from __future__ import annotations

import pytest

from toxcmp.analysis.divergence import (TokenDivergence, comparable, continuation, first_divergence, summarize_divergence,
                               text_fields)


@pytest.mark.parametrize("a, b, expected", [
    ("same", "same", None),
    ("abcX", "abcY", 3),
    ("Xbc", "Ybc", 0),
    ("abc", "abcdef", 3),  # one is a prefix: they part where the shorter ends
    ("", "a", 0),
    ("", "", None),
    ("naïve café", "naïve cafe", 9),  # characters, not bytes
])
def test_first_divergence_hand_cases(a, b, expected):
    assert first_divergence(a, b) == expected


def test_end_of_turn_markers_are_not_a_difference():
    assert comparable("The answer is 0<|im_end|>") == "The answer is 0"
    assert comparable("final 1<|return|>") == "final 1"
    assert comparable("a<|end|><|return|>") == "a"
    assert comparable("keeps <|im_end|> inside") == "keeps <|im_end|> inside"
    assert text_fields("Hello there.<|im_end|>", "Hello there.")["diverge_char"] is None
    assert text_fields("Hello there.<|im_end|>", "Hello here.")["diverge_char"] == 6


def test_text_fields_give_both_continuations_from_the_parting():
    a = "I cannot help with that request, sorry."
    b = "I cannot assist with that request."
    fields = text_fields(a, b)
    assert fields["diverge_char"] == 9
    assert fields["a_continuation"] == "help with that request, sorry."
    assert fields["b_continuation"] == "assist with that request."
    assert continuation("x" * 100, 10, 40) == "x" * 40
    assert text_fields(None, "b") == {"diverge_char": None, "a_continuation": None, "b_continuation": None}


def test_near_tie_threshold_is_one_nat_either_way():
    assert TokenDivergence(3, "a", "b", -0.6, -1.5).kind == "near_tie"  # gap 0.9
    assert TokenDivergence(3, "a", "b", -0.1, -1.2).kind == "real"  # gap 1.1
    assert TokenDivergence(3, "a", "b", -2.0, -1.2).kind == "near_tie"  # the other was likelier, by 0.8
    assert TokenDivergence(3, "a", "b", -2.7, -1.2).kind == "real"  # the other was likelier, by 1.5


def test_summary_counts_and_positions_by_hand():
    raws = {"a_raw": "x", "b_raw": "y"}
    rows = [
        {"diverge_char": None, **raws},
        {"diverge_char": 7, "diverge_token": 2, "divergence_kind": "near_tie", **raws},
        {"diverge_char": 30, "diverge_token": 9, "divergence_kind": "real", **raws},
        {"diverge_char": 12, "diverge_token": None, "divergence_kind": None, **raws},
        {"diverge_char": None, "a_error": "HTTP 500", **raws},  # not answered: not in any count
        {"diverge_char": None, "a_raw": "", "b_raw": "text"},  # a raw text not recorded: not in any count
    ]
    d = summarize_divergence(rows)
    assert (d["n_answered"], d["n_differ"], d["scored"], d["near_tie"], d["real"], d["unscored"]) == (4, 3, 2, 1, 1, 1)
    assert d["char_positions"]["values"] == [7, 12, 30] and d["char_positions"]["median"] == 12
    assert d["token_positions"]["values"] == [2, 9] and d["token_positions"]["median"] == 5.5
    assert summarize_divergence([{"diverge_char": None, **raws}])["char_positions"] is None


def test_a_recording_without_raw_text_claims_nothing_about_it():
    """The study files hold final answers only (raw output ''): no 'raw texts identical' claim, no positions."""
    from toxcmp.domain.policies import load_policy
    from toxcmp.report.text import divergence_line
    from toxcmp.analysis.scoring import derive

    side = {"content": "0", "reasoning": "", "raw": "", "error": None}
    row = {"example_id": "x", "toxicity": 0, **{f"{p}_{k}": v for p in "ab" for k, v in side.items()}}
    derived = derive(row, load_policy("toxic_simple"), None)
    assert derived["diverge_char"] is None and derived["raw_identical"] is None
    d = summarize_divergence([derived] * 3)
    assert d["n_answered"] == 0 and divergence_line(d) is None


@pytest.mark.slow
def test_token_divergence_matches_generate_scores_on_smollm2():
    """Build the other side by taking the runner-up token at step k of a real greedy generation: the divergence
    must be found at token k, and its log-probabilities must equal the ones `generate` itself reported there."""
    import torch

    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.backends.local_model import render_prompt
    from toxcmp.config import GenerationConfig
    from toxcmp.analysis.divergence import token_divergence
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    request = build_request(load_policy("toxic_chat_claude_1"), "how do I bake bread at home?",
                            resolve_model("smollm2-135m"), GenerationConfig.from_defaults(max_new_tokens=12))
    loaded = LocalBackend(BackendConfig()).load(request.model)  # the configuration every other test loads
    tok, model = loaded.tokenizer, loaded.model
    prompt = render_prompt(tok, request)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=10, do_sample=False, output_scores=True, return_dict_in_generate=True)
    generated = out.sequences[0, ids.shape[1]:].tolist()
    k = 4
    logprobs = torch.log_softmax(out.scores[k][0].float(), dim=-1)
    top2 = torch.topk(logprobs, 2).indices.tolist()
    assert top2[0] == generated[k]
    local_text = tok.decode(generated, skip_special_tokens=False)
    other_text = tok.decode(generated[:k] + [top2[1]], skip_special_tokens=False)
    found = token_divergence(model, tok, prompt, local_text, other_text, local_stopped=False, other_stopped=False)
    assert found is not None and found.position == k
    assert found.local_token == tok.decode([generated[k]]) and found.other_token == tok.decode([top2[1]])
    assert found.local_logprob == pytest.approx(float(logprobs[top2[0]]), abs=2e-3)
    assert found.other_logprob == pytest.approx(float(logprobs[top2[1]]), abs=2e-3)
    assert found.gap >= 0  # greedy chose the local token
    assert token_divergence(model, tok, prompt, local_text, local_text, False, False) is None


# llama.cpp's server's answer to sample row 16 (policy toxic_simple, 32 new tokens, greedy, repeat_penalty 1.0),
# recorded from a real run. llama.cpp wrote ":" then one "\n\n" token (its own log p: "\n\n" -0.68, "\n" -0.73)
# and then "1" (-0.03); transformers writes "\n", "\n" and then "-" over the same characters.
LLAMACPP_ROW_16 = ('Here are 5 single-word human behaviors and their corresponding emotions:\n\n1. "I\'m sorry, I\'m '
                   'sorry"\n2. "I\'m')


@pytest.mark.slow
def test_a_token_boundary_fork_on_the_same_text_is_the_parting_not_the_later_character():
    """Re-tokenizing both texts puts the parting at "-" vs "1" (a 7-nat 'real' difference in a context neither
    engine wrote); replaying the local path finds the near-equal choice between "\\n" and "\\n\\n" before it, with
    the log-probabilities a plain forward pass over the local path gives there."""
    import csv

    import torch

    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.backends.local_model import render_prompt
    from toxcmp.config import GenerationConfig, configs_dir
    from toxcmp.analysis.divergence import retokenized_divergence, token_divergence
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    with (configs_dir() / "samples" / "toxicchat0124_test_sample.csv").open(encoding="utf-8", newline="") as fh:
        text = list(csv.DictReader(fh))[16]["user_input"]
    request = build_request(load_policy("toxic_simple"), text, resolve_model("smollm2-135m"),
                            GenerationConfig.from_defaults(max_new_tokens=32))
    backend = LocalBackend(BackendConfig(strategy="naive"))
    [local] = backend.generate([request])
    loaded = backend.load(request.model)
    tok, model = loaded.tokenizer, loaded.model
    prompt = render_prompt(tok, request)
    assert local.raw_text.startswith(LLAMACPP_ROW_16[:74] + "-")  # same 74 characters, then "-" vs "1"

    old = retokenized_divergence(model, tok, prompt, local.raw_text, LLAMACPP_ROW_16, True, False)
    assert (old.local_token, old.other_token, old.kind) == ("-", "1", "real")

    found = token_divergence(model, tok, prompt, local.raw_text, LLAMACPP_ROW_16, True, False)
    assert (found.local_token, found.other_token, found.kind) == ("\n", "\n\n", "near_tie")
    path = tok(prompt, add_special_tokens=False)["input_ids"] + tok(LLAMACPP_ROW_16[:72], add_special_tokens=False)["input_ids"]
    assert found.position == len(tok(LLAMACPP_ROW_16[:72], add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(torch.tensor([path])).logits[0, -1].float(), dim=-1)
    newline, double = tok.convert_tokens_to_ids(tok.tokenize("\n"))[0], tok.convert_tokens_to_ids(tok.tokenize("\n\n"))[0]
    assert found.local_logprob == pytest.approx(float(logprobs[newline]), abs=2e-3)
    assert found.other_logprob == pytest.approx(float(logprobs[double]), abs=2e-3)
