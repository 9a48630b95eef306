"""What the local backend's generation leaves behind for teacher-forced scoring (issue 24): each prompt's KV after
the shared prefix, its new tokens, and their recorded log p and top ids, so scoring another arm's answer runs only
what the generation did not already compute.

Scoring another arm's answer under the local model needs the KV of the exact prompt. The prefix strategy already
computed it while generating: the shared policy prefix (kept per process and model, local_prefixes) and each
row's tail after it, then its new tokens. When the local arm records log-probabilities (`logprobs=K`, the runs
that score), each row's KV after the prefix — tail and new tokens, the last new token left out (never fed) — is
kept here, on the host, keyed by the prompt's token ids, with the new tokens and, per step, the chosen token's
log p and the top `local_logprobs.KEPT_TOP` ids. An answer that starts with the same d tokens as the generation
takes their scores from what the generation recorded (the same distributions, conditioned on the same tokens)
and runs only its tokens from d on, over the KV cut after the prompt and those d − 1 tokens
(`local_forcing`): an answer the generation shares nothing with runs the prompt's last token and every scored
token; one it shares entirely runs nothing.

Process-wide and per loaded model (another backend instance of the same model, as the scoring phase builds, finds
them), least recently used first out past `BUDGET_BYTES`. A prompt not found here is scored the long way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from toxcmp.backends.kept import KeptPerModel

BUDGET_BYTES = 1 << 30  # host memory for kept tails, all models together (SmolLM2 fp32: ~46 KB a token)


@dataclass(frozen=True)
class Tail:
    n_prefix: int  # the shared prefix's length this tail follows
    kv: tuple  # per layer (keys, values), each (1, kv heads, len(tokens) − 1, head dim), on the host
    nbytes: int
    tokens: tuple[int, ...] = ()  # the prompt's tail after the prefix, then the new tokens generated after it
    n_tail: int = 0  # how many of `tokens` are the prompt's
    logprobs: tuple[float, ...] = ()  # per new token: its log p as generated
    top_ids: tuple[tuple[int, ...], ...] = ()  # per new token: the most likely ids at its step, best first

    @property
    def generated(self) -> tuple[int, ...]:
        return self.tokens[self.n_tail:]


_kept = KeptPerModel()


def keep(model: Any, prompt_ids: Sequence[int], n_prefix: int, kv: Sequence[tuple[Any, Any]],
         generated: Sequence[int] = (), steps: tuple[Sequence[float], Sequence[Sequence[int]]] = ((), ()),
         kernels: str = "torch") -> None:
    """Keep one row's KV after the prefix (per layer: its tail, then `generated` but the last; with nothing
    generated, the tail but its last token) and the recorded `steps` of `generated` (log p, top ids)."""
    host = tuple((k.to("cpu", copy=True).contiguous(), v.to("cpu", copy=True).contiguous()) for k, v in kv)
    tail = tuple(prompt_ids[n_prefix:])
    logprobs, top_ids = steps
    kept = Tail(n_prefix, host, sum(k.nbytes + v.nbytes for k, v in host), tail + tuple(generated), len(tail),
                tuple(float(x) for x in logprobs), tuple(tuple(int(t) for t in ids) for ids in top_ids))
    with _kept.lock:
        _kept.put(model, (kernels, *prompt_ids), kept)
        held = held_bytes()
        while held > BUDGET_BYTES:
            oldest = _kept.pop_oldest()
            if oldest is None:
                break
            held -= oldest.nbytes


def find(model: Any, prompt_ids: Sequence[int], kernels: str = "torch") -> Tail | None:
    """`kernels`: the linear kernels the tail was computed with (cpu_linear), part of the key."""
    return _kept.find(model, (kernels, *prompt_ids))


def forget(model: Any | None = None) -> None:
    """Drop the kept tails of `model` (all models when None)."""
    _kept.forget(model)


def held_bytes() -> int:
    """Bytes kept, all models together: counted from what is held, so a model collected since counts nothing."""
    return sum(t.nbytes for t in _kept.values())
