"""The shared policy prefix's KV, kept per process and model (toxcmp.backends.local_prefixes): keyed by the loaded
model object and the prefix's exact token ids, least recently used out past `PER_MODEL`. That a scoring instance
finds what a generating one computed, and scores exactly as a plain forward pass, is checked in
tests/backends/test_local_tails.py."""

from __future__ import annotations

from toxcmp.backends import local_prefixes
from toxcmp.backends.local_prefixes import PrefixCache


class Model:  # any object the loaded-model cache would hold: the store keys on its identity
    pass


def test_a_prefix_is_found_only_for_the_same_model_and_the_same_ids():
    model, other = Model(), Model()
    prefix = PrefixCache([1, 2, 3], cache=object())
    local_prefixes.keep(model, prefix)
    assert local_prefixes.find(model, (1, 2, 3)) is prefix
    assert local_prefixes.find(other, [1, 2, 3]) is None  # another model (another dtype, device, revision)
    assert local_prefixes.find(model, [1, 2, 3], "onednn") is None  # computed with other linear kernels
    assert local_prefixes.find(model, [1, 2]) is None and local_prefixes.find(model, [1, 2, 3, 4]) is None
    local_prefixes.forget(model)
    assert local_prefixes.find(model, [1, 2, 3]) is None


def test_the_least_recently_used_prefix_goes_first(monkeypatch):
    monkeypatch.setattr(local_prefixes, "PER_MODEL", 2)
    model = Model()
    for ids in ([1], [2]):
        local_prefixes.keep(model, PrefixCache(ids, cache=None))
    assert local_prefixes.find(model, [1]) is not None  # used: now the most recent
    local_prefixes.keep(model, PrefixCache([3], cache=None))
    assert local_prefixes.find(model, [2]) is None
    assert local_prefixes.find(model, [1]) is not None and local_prefixes.find(model, [3]) is not None
    local_prefixes.forget()
    assert local_prefixes.find(model, [1]) is None
