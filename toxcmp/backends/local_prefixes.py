"""The KV cache of the shared policy prefix, computed once per process and model, not once per backend instance.

The prefix strategy runs every prompt of one (model, policy, template options, render date) over the KV of the
token prefix they share. Scoring phases after a run (token parity, label probabilities) build backend instances
of their own for the local arm's model; keyed here by the loaded model object and the prefix's exact token ids,
they find the prefix the arm's generation computed instead of prefilling it again (597 tokens of
`toxic_chat_claude_1` on SmolLM2: ~2 s of a 7 s scoring phase on one thread). The KV is a function of the weights,
the ids and the linear kernels that computed it (`kernels`, toxcmp.backends.cpu_linear: their rounding differs), so
those are the key. A backend's `close()` leaves them (compare closes its
engines before those phases); they go with their model (`LocalModelCache.clear()`) or with `forget()`.
Benchmarks call `forget()` before each timed generation, so every timed run pays for its own prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from toxcmp.backends.kept import KeptPerModel

PER_MODEL = 4  # prefixes kept per model (policies × template options × render dates; on a GPU each is
# ~0.1 GB for gpt-oss-20b and a long policy), least recently used out


@dataclass
class PrefixCache:
    """The KV cache of the token prefix every prompt of one (model, policy, template options) shares."""

    ids: list[int]
    cache: Any  # transformers Cache after a forward pass over `ids`

    def expanded(self, batch: int) -> Any:
        import copy

        cache = copy.deepcopy(self.cache)  # generate() extends the cache in place
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    def starts(self, ids: Sequence[int]) -> bool:
        """Whether a prompt of `ids` begins with this prefix and goes on after it."""
        return len(ids) > len(self.ids) and list(ids[: len(self.ids)]) == self.ids


_kept = KeptPerModel()


def find(model: Any, ids: Sequence[int], kernels: str = "torch") -> PrefixCache | None:
    return _kept.find(model, (kernels, *ids))


def keep(model: Any, prefix: PrefixCache, kernels: str = "torch") -> None:
    with _kept.lock:
        _kept.put(model, (kernels, *prefix.ids), prefix)
        while _kept.count(model) > PER_MODEL:
            _kept.pop_oldest(model)


def forget(model: Any | None = None) -> None:
    """Drop the kept prefixes of `model` (all models when None)."""
    _kept.forget(model)
