"""Prompt tails kept from the local backend's generation, so teacher-forced scoring (issue 24) runs only the
scored tokens.

Scoring another arm's answer under the local model needs the KV of the exact prompt. The prefix strategy already
computed it while generating: the shared policy prefix (kept per process and model, local_prefixes) and each
row's tail after it (its own prefill). When the local arm records log-probabilities (`logprobs=K`, the runs that
score), each row's tail KV is kept here, on the host, keyed by the prompt's token ids; `continuation_logits` then
runs the prompt's last token and the scored tokens over [prefix ‖ tail] instead of the whole tail again. The last
prompt token is left out of the kept KV because its logits predict the first scored token.

Process-wide and per loaded model (another backend instance of the same model, as the scoring phase builds, finds
them), least recently used first out past `BUDGET_BYTES`. A prompt not found here is scored the long way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from toxcmp.backends.kept import KeptPerModel

BUDGET_BYTES = 1 << 30  # host memory for kept tails, all models together (SmolLM2 fp32: ~46 KB a token)


@dataclass(frozen=True)
class Tail:
    n_prefix: int  # the shared prefix's length this tail follows
    kv: tuple  # per layer (keys, values), each (1, kv heads, tail length − 1, head dim), on the host
    nbytes: int


_kept = KeptPerModel()


def keep(model: Any, prompt_ids: Sequence[int], n_prefix: int, kv: Sequence[tuple[Any, Any]]) -> None:
    """Keep one row's tail KV (per layer, the tail's positions after the prefix, its last token left out)."""
    host = tuple((k.to("cpu", copy=True).contiguous(), v.to("cpu", copy=True).contiguous()) for k, v in kv)
    with _kept.lock:
        _kept.put(model, tuple(prompt_ids), Tail(n_prefix, host, sum(k.nbytes + v.nbytes for k, v in host)))
        held = held_bytes()
        while held > BUDGET_BYTES:
            oldest = _kept.pop_oldest()
            if oldest is None:
                break
            held -= oldest.nbytes


def find(model: Any, prompt_ids: Sequence[int]) -> Tail | None:
    return _kept.find(model, tuple(prompt_ids))


def forget(model: Any | None = None) -> None:
    """Drop the kept tails of `model` (all models when None)."""
    _kept.forget(model)


def held_bytes() -> int:
    """Bytes kept, all models together: counted from what is held, so a model collected since counts nothing."""
    return sum(t.nbytes for t in _kept.values())


def keeper(model: Any, prompts: Sequence[Sequence[int]], n_prefix: int) -> Callable[[int, list], None]:
    """The callback `shared_prefix.greedy_decode` hands each prefilled row's tail KV to (row k is prompts[k])."""
    return lambda k, kv: keep(model, prompts[k], n_prefix, kv)

