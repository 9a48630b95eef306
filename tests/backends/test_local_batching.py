"""Batched and shared-prefix local generation: token-identical to the naive reference, robust to failures."""

from __future__ import annotations

import csv
import logging

import pytest

from toxcmp.backends import BackendConfig, local_prefixes
from toxcmp.backends import local as local_mod
from toxcmp.backends.local import LocalBackend
from toxcmp.backends.local_batches import length_buckets, parse_batch_size
from toxcmp.backends.local_model import LocalModelCache
from toxcmp.config import GenerationConfig, configs_dir
from toxcmp.errors import UsageError
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request


def test_length_buckets_cover_every_item_once_in_length_order():
    items = [(i, list(range(n))) for i, n in enumerate([50, 3, 700, 8, 9, 10, 400, 11, 12, 3])]
    batches = length_buckets(items, size=4, shared=0, step_cost_tokens=100)
    flat = [i for b in batches for i, _ in b]
    assert sorted(flat) == list(range(10)) and all(len(b) <= 4 for b in batches)
    lengths = [len(ids) for b in batches for _, ids in b]
    assert lengths == sorted(lengths)
    # the 700-token item is never padded into a batch of short ones
    assert [len(ids) for _, ids in batches[-1]] == [700] or len(batches[-1]) == 1


def test_length_buckets_trade_padding_against_decode_steps():
    items = [(i, [0] * n) for i, n in enumerate([10, 10, 10, 1000])]
    assert len(length_buckets(items, size=8, step_cost_tokens=0)) == 2  # padding 3 × 990 is worse than a batch
    assert len(length_buckets(items, size=8, step_cost_tokens=10_000)) == 1  # a decode loop costs more
    assert length_buckets([], size=4) == []


def test_batch_size_parsing():
    assert parse_batch_size("auto") is None and parse_batch_size("8") == 8
    for bad in ("0", "-1", "lots"):
        with pytest.raises(UsageError, match="--batch-size"):
            parse_batch_size(bad)
    with pytest.raises(UsageError, match="--strategy"):
        LocalBackend(BackendConfig(strategy="fastest"))


def _sample_requests(policy="toxic_chat_claude_1", n=24, max_new_tokens=24):
    with (configs_dir() / "samples" / "toxicchat0124_test_sample.csv").open(encoding="utf-8", newline="") as fh:
        texts = [row["user_input"] for row in csv.DictReader(fh)][:n]
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    return [build_request(load_policy(policy), t, resolve_model("smollm2-135m"), generation) for t in texts]


@pytest.fixture(scope="module")
def reference():
    requests = _sample_requests()
    return requests, [r.raw_text for r in LocalBackend(BackendConfig(strategy="naive")).generate(requests)]


@pytest.mark.slow
@pytest.mark.parametrize("strategy, batch_size", [("batched", "auto"), ("prefix", "auto"), ("prefix", "5")])
def test_strategies_are_token_identical_to_naive_on_real_rows(reference, strategy, batch_size):
    """prefix on all 24 shipped rows; batched, which prefills every prompt whole (~3.5 s a row here), on every
    other row: 12 rows still spanning the lengths, so its buckets still differ in width."""
    requests, expected = reference
    if strategy == "batched":
        requests, expected = requests[::2], expected[::2]
    loads = LocalModelCache.loads
    backend = LocalBackend(BackendConfig(strategy=strategy, batch_size=batch_size))
    seen = []
    out = backend.generate(requests, on_response=lambda i, r: seen.append(i))
    assert [r.raw_text for r in out] == expected  # token for token, in input order
    assert sorted(seen) == list(range(len(requests)))
    assert LocalModelCache.loads == loads  # the model is loaded once per process
    assert all(r.extra["strategy"] == strategy for r in out)
    if strategy == "prefix":
        # computed here, or found: the earlier case's (toxcmp.backends.local_prefixes)
        shared = backend.stats["prefix_tokens_computed"] + backend.stats["prefix_tokens_found"]
        assert backend.stats["prefix_hits"] == len(requests) and shared > 100
    if batch_size == "5":
        assert max(r.extra["batch_size"] for r in out) <= 5


@pytest.mark.slow
def test_replicated_prefix_cache_path_is_identical_too(reference, monkeypatch):
    """Models the shared-prefix attention does not support use generate() with the prefix cache per row."""
    from toxcmp.backends import shared_prefix

    requests, expected = reference
    monkeypatch.setattr(shared_prefix, "supported", lambda model: False)
    out = LocalBackend(BackendConfig(strategy="prefix")).generate(requests[:12])
    assert [r.raw_text for r in out] == expected[:12]


@pytest.mark.slow
def test_a_failing_batch_is_split_and_retried(reference, monkeypatch):
    requests, expected = reference
    original = LocalBackend._batch_generate

    def flaky(self, loaded, reqs, batch, prefix, recorder=None):
        if len(batch) > 2:
            raise RuntimeError("out of memory (simulated)")
        return original(self, loaded, reqs, batch, prefix, recorder)

    monkeypatch.setattr(LocalBackend, "_batch_generate", flaky)
    backend = LocalBackend(BackendConfig(strategy="prefix", batch_size="8"))
    out = backend.generate(requests[:8])
    assert [r.raw_text for r in out] == expected[:8] and backend.stats["splits"] >= 2


@pytest.mark.slow
def test_an_example_that_fails_alone_becomes_a_per_example_error(reference, monkeypatch):
    requests, expected = reference
    original = LocalBackend._batch_generate
    poison = requests[3].prompt_hash

    def poisoned(self, loaded, reqs, batch, prefix, recorder=None):
        if any(reqs[i].prompt_hash == poison for i, _ in batch):
            raise RuntimeError("kernel failure on this input")
        return original(self, loaded, reqs, batch, prefix, recorder)

    monkeypatch.setattr(LocalBackend, "_batch_generate", poisoned)
    out = LocalBackend(BackendConfig(strategy="prefix")).generate(requests[:6])
    assert out[3].error == "RuntimeError: kernel failure on this input"
    assert [r.raw_text for i, r in enumerate(out) if i != 3] == [e for i, e in enumerate(expected[:6]) if i != 3]


@pytest.mark.slow
def test_prefix_cache_unavailable_falls_back_and_says_so_once(reference, monkeypatch, caplog):
    requests, expected = reference

    class Unexpandable:
        def __init__(self, *a, **k):
            raise TypeError("cache type HybridCache cannot be expanded per batch")

    monkeypatch.setattr(local_mod, "PrefixCache", Unexpandable)
    local_prefixes.forget()  # an earlier test's prefix of this model would be found, not computed
    monkeypatch.setattr(LocalBackend, "_prefix_warned", set())
    with caplog.at_level(logging.WARNING, logger="toxcmp.backends.local"):
        for _ in range(2):
            out = LocalBackend(BackendConfig(strategy="prefix")).generate(requests[:3])
            assert [r.raw_text for r in out] == expected[:3]
    warnings = [r for r in caplog.records if "prefix KV reuse is off" in r.getMessage()]
    assert len(warnings) == 1


def test_a_failed_batch_is_released_before_its_halves_run(monkeypatch):
    """An OOM's traceback holds the failed batch's frames (and its activations on the GPU): the halves must run
    after it is dropped, or every smaller retry runs out of memory too (seen on an H200 before this fix)."""
    import weakref

    class Activations:
        pass

    backend = LocalBackend(BackendConfig(device="cpu"))
    refs: list[weakref.ref] = []
    alive_when_called: list[int] = []

    def failing(loaded, requests, batch, prefix, recorder=None):
        alive_when_called.append(sum(ref() is not None for ref in refs))
        held = Activations()  # what a real failed forward pass leaves in its frames
        refs.append(weakref.ref(held))
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(backend, "_batch_generate", failing)
    requests = _sample_requests(n=4, max_new_tokens=4)
    emitted: dict[int, str] = {}
    backend._run_batch(None, requests, [(i, [1, 2, 3]) for i in range(4)], None,
                       lambda i, response: emitted.__setitem__(i, response.error))
    assert len(alive_when_called) == 7  # 4 → 2 + 2 → 1 + 1 + 1 + 1
    assert alive_when_called == [0] * 7
    assert sorted(emitted) == [0, 1, 2, 3]
    assert all(e == "RuntimeError: CUDA out of memory (simulated)" for e in emitted.values())
    assert backend.stats["splits"] == 3
