"""Where two backends' texts part, and (with a local model) whether the parting was a near tie.

Two engines that run the same weights greedily write the same text until one of them picks a different next
token. The first divergent character says where; when one side is local, the local model scores both sides' next
tokens at that point: a gap under `NEAR_TIE_NATS` is a near tie that a small numeric difference (quantized kernels,
another accumulation order) can flip; a larger gap is a real difference (another prompt, another decoding rule,
other weights).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from toxcmp.analysis.diagnosis import NEAR_TIE_NATS
from toxcmp.domain.tokens import eos_ids

CONTEXT_CHARS = 40  # of each continuation, from the first divergent character
DIVERGENCE_SCORE_LIMIT = 1000  # partings the local model scores per comparison (a replay up to each)
DIVERGENCE_KINDS = ("near_tie", "real")


def first_divergence(a: str, b: str) -> int | None:
    """Index of the first character where the texts differ; the shorter length when one is a prefix of the other;
    None when they are identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def continuation(text: str, at: int, width: int = CONTEXT_CHARS) -> str:
    return text[at:at + width]


_END_MARKER = re.compile(r"(?:<\|(?:im_end|return|end|eot_id|endoftext)\|>|</s>)\s*$")


def comparable(raw: str) -> str:
    """The raw output without its end-of-turn marker: a local model's decoded output keeps the EOS it stopped on,
    a server's does not, and that is not a difference in what the model wrote."""
    while True:
        stripped = _END_MARKER.sub("", raw)
        if stripped == raw:
            return raw
        raw = stripped


def text_fields(a_raw: str | None, b_raw: str | None) -> dict[str, Any]:
    """Character-level divergence of two raw outputs, end-of-turn markers aside (no model needed; rescore
    recomputes it)."""
    if a_raw is None or b_raw is None:
        return {"diverge_char": None, "a_continuation": None, "b_continuation": None}
    a_raw, b_raw = comparable(a_raw), comparable(b_raw)
    at = first_divergence(a_raw, b_raw)
    if at is None:
        return {"diverge_char": None, "a_continuation": None, "b_continuation": None}
    return {"diverge_char": at, "a_continuation": continuation(a_raw, at), "b_continuation": continuation(b_raw, at)}


@dataclass(frozen=True)
class TokenDivergence:
    position: int  # generated tokens both sides share before they part
    local_token: str  # the local side's next token there (decoded; an end token as itself, e.g. <|im_end|>)
    other_token: str
    local_logprob: float  # the local model's log-probability of each next token at that position
    other_logprob: float

    @property
    def gap(self) -> float:
        return self.local_logprob - self.other_logprob

    @property
    def kind(self) -> str:
        return "near_tie" if abs(self.gap) < NEAR_TIE_NATS else "real"


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _stop_token(tokenizer: Any, local_text: str) -> int | None:
    """The end token the local model stopped on (its decoded output keeps it), else the tokenizer's EOS. A server
    strips its end token, so the other side is taken to have stopped on the same one."""
    found = _END_MARKER.search(local_text)
    if found:
        ids = _ids(tokenizer, found.group(0).strip())
        if len(ids) == 1:
            return ids[0]
    return tokenizer.eos_token_id


def token_divergence(model: Any, tokenizer: Any, prompt: str, local_text: str, other_text: str,
                     local_stopped: bool = True, other_stopped: bool = True) -> TokenDivergence | None:
    """The first generated token where the local model's own path leaves the other side's, scored by the local
    model.

    The local path is replayed greedily from the exact prompt, so its tokens are the ones it really wrote: two
    engines can write the same characters in different tokens (one "\n\n" token, or "\n" then "\n"), and that
    choice, not the later character where the texts visibly part, is where their paths split. At each step the
    other side's token is taken to be the local tokenizer's first token of its remaining text (an engine's own
    token ids are not on the wire). When the replay does not reproduce the local text (another dtype or device
    wrote it), both texts are re-tokenized instead (`retokenized_divergence`). A side that stopped continues with
    the end token; a side cut off by the token budget has no next token, so a parting that is only one side
    running longer is not scored (None)."""
    found = replayed_divergence(model, tokenizer, prompt, local_text, other_text, other_stopped)
    if found is not NOT_REPLAYED:
        return found
    return retokenized_divergence(model, tokenizer, prompt, local_text, other_text, local_stopped, other_stopped)


NOT_REPLAYED: Any = object()


def replayed_divergence(model: Any, tokenizer: Any, prompt: str, local_text: str, other_text: str,
                        other_stopped: bool = True) -> Any:
    """`token_divergence` along the replayed local path; NOT_REPLAYED when the replay is not the local text."""
    import torch

    local, other = comparable(local_text), comparable(other_text)
    at_char = first_divergence(local, other)
    if at_char is None:
        return None
    budget = len(_ids(tokenizer, local[: at_char + 1])) + 4  # enough steps to pass the visible parting
    prompt_ids = _ids(tokenizer, prompt)
    device = next(model.parameters()).device
    inputs = torch.tensor([prompt_ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=budget, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=pad)
    ids = out.sequences[0, len(prompt_ids):].tolist()
    eos = eos_ids(model, tokenizer)
    written = ""
    fork: TokenDivergence | None = None  # the first near-equal choice between tokens that both fit the other text
    for t, token in enumerate(ids):
        rest = other[len(written):]
        if token in eos:
            if written != local:
                return NOT_REPLAYED  # the replay stopped where the local side went on
            if not rest:
                return None
            theirs = _ids(tokenizer, rest)[0]
        else:
            text = tokenizer.decode(ids[: t + 1], skip_special_tokens=False).rstrip("\ufffd")
            if not local.startswith(text):
                return NOT_REPLAYED  # the replay is not the path the local side wrote
            if len(text) == len(written):
                continue  # an incomplete character: judge it with the next token
            if not rest:
                if not other_stopped:
                    return None  # the other side was cut off here: no next token to compare
                theirs = tokenizer.eos_token_id
            else:
                theirs = _ids(tokenizer, rest)[0]
            if theirs == token:
                fork = fork or _boundary_fork(tokenizer, out.logits[t][0], t, token, text[len(written):], rest)
                written = text
                continue
        logprobs = torch.log_softmax(out.logits[t][0].float(), dim=-1)
        found = TokenDivergence(t, tokenizer.decode([token]), tokenizer.decode([theirs]), float(logprobs[token]),
                                float(logprobs[theirs]))
        # A real-looking parting after a near-equal choice of token boundaries on the same text ("\n" + "\n" or
        # one "\n\n"): the other engine may have taken the other boundary there, and its later text follows
        # from that; the fork is the first place the paths can have split.
        return fork if found.kind == "real" and fork is not None else found
    return NOT_REPLAYED  # the replay ran out of steps before the parting


def _boundary_fork(tokenizer: Any, logits: Any, t: int, token: int, piece: str, rest: str,
                   candidates: int = 5) -> TokenDivergence | None:
    """A likely token other than the one written whose text also begins the other side's remaining text but
    covers more of it (a longer token over the same characters), within NEAR_TIE_NATS of the chosen one."""
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    for alt in torch.topk(logprobs, candidates).indices.tolist():
        text = tokenizer.decode([alt])
        if alt != token and len(text) > len(piece) and rest.startswith(text) \
                and float(logprobs[token] - logprobs[alt]) < NEAR_TIE_NATS:
            return TokenDivergence(t, tokenizer.decode([token]), text, float(logprobs[token]), float(logprobs[alt]))
    return None


def retokenized_divergence(model: Any, tokenizer: Any, prompt: str, local_text: str, other_text: str,
                           local_stopped: bool = True, other_stopped: bool = True) -> TokenDivergence | None:
    """Both outputs re-tokenized with the local tokenizer after the exact prompt; the first token where they
    differ, both next tokens scored under the local model (one forward pass)."""
    import torch

    local_ids, other_ids = _ids(tokenizer, comparable(local_text)), _ids(tokenizer, comparable(other_text))
    eos = _stop_token(tokenizer, local_text)
    if eos is not None:
        local_ids = local_ids + [eos] if local_stopped else local_ids
        other_ids = other_ids + [eos] if other_stopped else other_ids
    at = next((i for i, (x, y) in enumerate(zip(local_ids, other_ids)) if x != y), None)
    if at is None:
        return None
    prompt_ids = _ids(tokenizer, prompt)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(torch.tensor([prompt_ids + local_ids[:at]], device=device)).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return TokenDivergence(at, tokenizer.decode([local_ids[at]]), tokenizer.decode([other_ids[at]]),
                           float(logprobs[local_ids[at]]), float(logprobs[other_ids[at]]))


def token_fields(found: TokenDivergence | None, local_side: str) -> dict[str, Any]:
    """The pair-row columns of a token divergence, as a/b from the local side's point of view."""
    if found is None:
        return {}
    other_side = "b" if local_side == "a" else "a"
    return {"diverge_token": found.position, f"{local_side}_next_token": found.local_token,
            f"{other_side}_next_token": found.other_token, f"{local_side}_next_logprob": round(found.local_logprob, 4),
            f"{other_side}_next_logprob": round(found.other_logprob, 4), "divergence_kind": found.kind}


TOKEN_COLUMNS = ("diverge_token", "a_next_token", "b_next_token", "a_next_logprob", "b_next_logprob",
                 "divergence_kind")


def _quantiles(values: Sequence[int]) -> dict[str, Any] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1],
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if len(ordered) >= 10 else None,
            "values": ordered}


def summarize_divergence(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Over the rows where both sides answered with a recorded raw text: how many texts differ, where they part
    (characters and, when scored, tokens) and how many partings were near ties."""
    answered = [r for r in rows if not (r.get("a_error") or r.get("b_error")) and r.get("a_raw") and r.get("b_raw")]
    differ = [r for r in answered if r.get("diverge_char") is not None]
    scored = [r for r in differ if r.get("divergence_kind")]
    return {"n_answered": len(answered), "n_differ": len(differ),
            "char_positions": _quantiles([int(r["diverge_char"]) for r in differ]),
            "token_positions": _quantiles([int(r["diverge_token"]) for r in scored]),
            "scored": len(scored), **{k: sum(r["divergence_kind"] == k for r in scored) for k in DIVERGENCE_KINDS},
            "unscored": len(differ) - len(scored)}
