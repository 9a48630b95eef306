"""Prompt tails kept from generating (toxcmp.backends.local_tails): teacher-forced scoring over them gives the log p
of a plain forward pass over prompt + answer, written here; the store keeps to its budget."""

from __future__ import annotations

import csv

import pytest

from toxcmp.backends import local_prefixes, local_tails
from toxcmp.backends.local import LocalBackend, LocalOptions
from toxcmp.config import GenerationConfig, configs_dir
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"


@pytest.fixture(autouse=True)
def no_tails_kept():
    local_tails.forget()
    local_prefixes.forget()
    yield
    local_tails.forget()
    local_prefixes.forget()


def _requests(n, max_new_tokens=12):
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        texts = [row["user_input"] for row in csv.DictReader(fh)][:n]
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    return [build_request(load_policy("toxic_simple"), t, resolve_model("smollm2-135m"), generation) for t in texts]


def _plain_logp(loaded, request, answer_ids, top_k=0):
    """log p of each answer token after the prompt, from one forward pass with no cache at all (and with `top_k`,
    the top ids at each position too)."""
    import torch

    tokenizer = loaded.tokenizer
    prompt = tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([prompt_ids + answer_ids])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
    chosen = [float(logp[j, t]) for j, t in enumerate(answer_ids)]
    return (chosen, torch.topk(logp, top_k, dim=-1).indices.tolist()) if top_k else chosen


@pytest.mark.slow
def test_scoring_over_the_tails_a_recording_run_kept_equals_a_plain_forward_pass():
    from toxcmp.run.teacher_forcing import score_texts

    requests = _requests(5)  # tails of different lengths: prefilled in groups, left-padded within each
    recording = LocalBackend(LocalOptions.build({"device": "cpu", "logprobs": 2}))
    answers = recording.generate(requests)
    assert recording.stats["prefill_groups"] >= 2
    assert local_tails.held_bytes() > 0
    scorer = LocalBackend(LocalOptions.build({"device": "cpu"}))  # another instance, as the scoring phase builds
    loaded = scorer.load(requests[0].model)
    # answers cut to different lengths: one forward pass for all five rows pads the shorter ones on the right
    cut = [[t["id"] for t in a.extra["token_logprobs"]][: 12 - 2 * k] for k, a in enumerate(answers)]
    assert len({len(ids) for ids in cut}) == len(cut)
    scored = score_texts(scorer, [(r, loaded.tokenizer.decode(ids), ids) for r, ids in zip(requests, cut)])
    # every token forced over the kept KV, as for answers sharing no token with the generation
    forced = scorer.continuation_scores_many(list(zip(requests, cut)), 5, reuse=False)
    for request, ids, local, every in zip(requests, cut, scored, forced):
        expected = _plain_logp(loaded, request, ids)
        assert len(local.logprobs) == len(every.logprobs) == len(expected) == len(ids)
        assert max(abs(a - b) for a, b in zip(local.logprobs, expected)) <= 1e-4
        assert max(abs(a - b) for a, b in zip(every.logprobs, expected)) <= 1e-4
    # the answers are the generation's own: score_texts read them all from it, the forced pass ran them all
    assert scorer.stats["tokens_reused"] == sum(len(ids) for ids in cut)
    assert scorer.stats["tails_reused"] == len(requests)
    # the shared prefix too: computed by the recording run, found (not prefilled again) by the scoring instance
    assert recording.stats["prefix_tokens_computed"] > 100 and scorer.stats["prefix_tokens_computed"] == 0
    assert scorer.stats["prefix_tokens_found"] == recording.stats["prefix_tokens_computed"]


@pytest.mark.slow
def test_answers_that_start_as_the_generation_did_are_scored_as_a_plain_forward_pass_scores_them():
    """Another arm's answer sharing its first d tokens with the local generation: those d read from what the
    generation recorded, the rest forced over its KV cut after them — for d = 0, inside, all of it, and an answer
    running past the generation's end; log p and the top 5 against a plain forward pass over prompt + answer."""
    from toxcmp.run.teacher_forcing import score_texts

    requests = _requests(5, max_new_tokens=10)
    recording = LocalBackend(LocalOptions.build({"device": "cpu", "logprobs": 1}))  # the wire's K < scoring's 5
    generated = [[t["id"] for t in a.extra["token_logprobs"]] for a in recording.generate(requests)]
    assert all(len(g) >= 6 for g in generated), generated
    scorer = LocalBackend(LocalOptions.build({"device": "cpu"}))
    loaded = scorer.load(requests[0].model)
    other = loaded.tokenizer(" I cannot say whether that is safe.", add_special_tokens=False)["input_ids"]
    answers = [other,  # d = 0: nothing shared
               generated[1][:3] + other,  # d = 3
               generated[2][:5] + [generated[2][5] + 1] + generated[2][6:],  # d = 5, then its own tokens again
               generated[3],  # all shared: nothing forced
               generated[4] + other[:3]]  # past the generation's end: d = its length
    shared = [0, 3, 5, len(generated[3]), len(generated[4])]
    scored = score_texts(scorer, [(r, loaded.tokenizer.decode(ids), ids) for r, ids in zip(requests, answers)])
    for request, ids, local in zip(requests, answers, scored):
        logp, top = _plain_logp(loaded, request, ids, top_k=5)
        assert len(local.logprobs) == len(ids)
        assert max(abs(a - b) for a, b in zip(local.logprobs, logp)) <= 1e-4
        assert local.top1 == [t == row[0] for t, row in zip(ids, top)]
        assert local.top == [[loaded.tokenizer.decode([t]) for t in row] for row in top]
    assert scorer.stats["tokens_reused"] == sum(shared)
    assert scorer.stats["tails_reused"] == len(requests) - 1  # the one shared entirely runs no forward pass


@pytest.mark.slow
def test_a_run_that_records_no_log_p_keeps_nothing_and_scoring_runs_the_whole_tail():
    from toxcmp.run.teacher_forcing import score_text

    requests = _requests(3)
    answers = LocalBackend(LocalOptions.build({"device": "cpu"})).generate(requests)
    assert local_tails.held_bytes() == 0
    scorer = LocalBackend(LocalOptions.build({"device": "cpu"}))
    loaded = scorer.load(requests[0].model)
    for request, answer in zip(requests, answers):
        ids = loaded.tokenizer(answer.raw_text, add_special_tokens=False)["input_ids"]
        scored = score_text(scorer, request, answer.raw_text, ids=ids)
        assert max(abs(a - b) for a, b in zip(scored.logprobs, _plain_logp(loaded, request, ids))) <= 1e-4
    assert scorer.stats["tails_reused"] == 0


def test_the_store_drops_the_least_recently_used_tail_past_its_budget(monkeypatch):
    import torch

    class Model:  # any object the loaded-model cache would hold: the store keys on its identity
        pass

    model = Model()
    kv = [(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))]  # 2 × 96 bytes of float32
    monkeypatch.setattr(local_tails, "BUDGET_BYTES", 2 * 192)
    local_tails.keep(model, [1, 2], 1, kv)
    local_tails.keep(model, [1, 3], 1, kv)
    assert local_tails.find(model, [1, 2]) is not None  # used: now the most recent
    local_tails.keep(model, [1, 4], 1, kv)
    assert local_tails.find(model, [1, 3]) is None
    assert local_tails.find(model, [1, 2]) is not None and local_tails.find(model, [1, 4]) is not None
    assert local_tails.held_bytes() == 2 * 192
    local_tails.keep(model, [1, 4], 1, kv)  # kept again: replaced, not counted twice
    assert local_tails.held_bytes() == 2 * 192
    kept = local_tails.find(model, [1, 2])
    assert kept.n_prefix == 1 and kept.kv[0][0].device.type == "cpu"
    assert local_tails.find(Model(), [1, 2]) is None  # another model's prompt of the same ids is not this one
    assert local_tails.find(model, [1, 2], "onednn") is None  # computed with other linear kernels: not this one
    local_tails.forget(model)
    assert local_tails.held_bytes() == 0 and local_tails.find(model, [1, 2]) is None


def test_a_model_dropped_from_the_process_takes_its_tails_bytes_with_it(monkeypatch):
    """Else the budget would count tails nobody holds, and every later keep would evict what it just kept."""
    import gc

    import torch

    class Model:
        pass

    model, kept = Model(), Model()
    kv = [(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))]
    monkeypatch.setattr(local_tails, "BUDGET_BYTES", 2 * 192)
    local_tails.keep(model, [1, 2], 1, kv)
    local_tails.keep(kept, [1, 2], 1, kv)
    del model
    gc.collect()
    assert local_tails.held_bytes() == 192
    local_tails.keep(kept, [1, 3], 1, kv)  # fits: the collected model's bytes no longer count
    assert local_tails.find(kept, [1, 2]) is not None and local_tails.find(kept, [1, 3]) is not None


@pytest.mark.slow
def test_an_arm_on_other_linear_kernels_finds_nothing_the_default_one_kept():
    """The prefix KV and the tails are keyed by the kernels that computed them: `linear=torch` computes its own."""
    requests = _requests(2, max_new_tokens=2)
    LocalBackend(LocalOptions.build({"device": "cpu", "logprobs": 2})).generate(requests)  # linear=onednn
    same = LocalBackend(LocalOptions.build({"device": "cpu"}))
    same.generate(requests)
    other = LocalBackend(LocalOptions.build({"device": "cpu", "linear": "torch"}))
    other.generate(requests)
    assert same.stats["prefix_tokens_found"] > 0 and same.stats["prefix_tokens_computed"] == 0
    assert other.stats["prefix_tokens_found"] == 0 and other.stats["prefix_tokens_computed"] > 0
    loaded = other.load(requests[0].model)
    ids = loaded.tokenizer(other.render(requests[0]), add_special_tokens=False)["input_ids"]
    assert local_tails.find(loaded.model, ids, "onednn") is not None and local_tails.find(loaded.model, ids) is None
