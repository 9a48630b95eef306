"""Teacher-forced scoring (issue 24, step 2): every arm that sent its own token log-probabilities, beside a local arm
of the same model, has its exact text run through the local model — over prompt + text, the shared policy
prefix's KV reused where the local arm's strategy holds it, and only the text, several rows a pass, where the local
arm's recording run kept the prompt's KV; the tokens the text starts with that the local arm generated too are read
from what it recorded — and each of its tokens gets the local log p of the same characters
(toxcmp.analysis.token_parity)."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.analysis.token_parity import (LocalScores, align, arm_parity, delta_histogram, row_parity, spans_of,
                                          spelled_tokens)
from toxcmp.backends import ScoresTokensInBatches, TokenScores, get_backend
from toxcmp.domain.tokens import token_strings
from toxcmp.run.arms import Arm
from toxcmp.run.local_scoring import in_process, local_side, with_requests

TOP_K = 5  # local alternatives kept per position, for the top-K overlap


def score_text(backend: Any, request: Any, text: str, top_k: int = TOP_K,
               ids: Sequence[int] | None = None) -> LocalScores:
    """The local model's log p of each of its own tokens of `text` after the exact prompt of `request`; see
    `score_texts`."""
    return score_texts(backend, [(request, text, ids)], top_k)[0]


def score_texts(backend: Any, items: Sequence[tuple[Any, str, Sequence[int] | None]],
                top_k: int = TOP_K, reuse: bool = True) -> list[LocalScores]:
    """For each (request, text, ids): the local model's log p of each of its own tokens of `text` after the exact
    prompt of `request`, their character spans (from cumulative decoding, so a leading space belongs to its token,
    as on the wire), top-1 and top-K. `ids`: the text's token ids as an arm of the same model generated them
    (encoding the text again may split it otherwise), or None. Scored in as few forward passes as the backend
    can (`continuation_scores_many`: several rows a pass over the prompt KV a recording run kept, and the tokens its
    generation shares with the text read from what it recorded; `reuse=False`: computed, as a benchmark's worst
    case)."""
    encoded = []
    for request, text, ids in items:
        tokenizer = backend.load(request.model).tokenizer
        encoded.append(list(ids) if ids is not None else list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    todo = [(request, ids) for (request, _, _), ids in zip(items, encoded) if ids]
    if isinstance(backend, ScoresTokensInBatches):
        scored = iter(backend.continuation_scores_many(todo, top_k, reuse=reuse))
    else:
        scored = iter([_scores(backend.continuation_logits(request, ids), ids, top_k) for request, ids in todo])
    out = []
    for (request, _, _), ids in zip(items, encoded):
        if not ids:
            out.append(LocalScores([], [], [], []))
            continue
        tokenizer = backend.load(request.model).tokenizer
        s = next(scored)
        out.append(LocalScores(spans=spans_of(token_strings(tokenizer, ids)), logprobs=s.logprobs,
                               top1=[top[0] == t for top, t in zip(s.top_ids, ids)],
                               top=[[tokenizer.decode([t]) for t in row] for row in s.top_ids]))
    return out


def _scores(logits: Any, ids: Sequence[int], top_k: int) -> TokenScores:
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    return TokenScores(logp[torch.arange(len(ids)), torch.tensor(ids)].tolist(),
                       torch.topk(logp, top_k, dim=-1).indices.tolist())


def add_token_parity(tidy: Sequence[dict[str, Any]], arms: Sequence[Arm],
                     requests: Sequence[Sequence[Any]], examples: Sequence[dict[str, Any]],
                     observer: Any) -> dict[str, dict[str, Any]]:
    """Score every other arm's sent tokens (repeat 0; all of them when they spell the raw text, else the content
    part) under the first in-process arm's model; fills
    `local_logprob`, `local_top1` and `top_overlap` into each token of the tidy rows (tokens.parquet) and returns
    the per-arm parity (`summary["token_parity"]`)."""
    local_k = local_side(arms)
    if local_k is None:
        return {}
    local_arm = arms[local_k]
    todo = {a.label: [r for r in tidy if r["arm"] == a.label and not r.get("repeat") and r.get("token_logprobs")]
            for k, a in enumerate(arms) if k != local_k and a.model.model_id == local_arm.model.model_id}
    todo = {label: rows for label, rows in todo.items() if rows}
    if not todo:
        return {}
    labels = {a.label: k for k, a in enumerate(arms)}
    backend = get_backend(local_arm.spec.name, local_arm.options)
    observer.phase(f"scoring {sum(len(r) for r in todo.values())} answer(s) token by token with the local model",
                   detail=True)
    out = {}
    for label, rows in todo.items():
        per_row, deltas, todo_rows, items = [], [], [], []
        for row, request in with_requests(rows, requests[local_k], examples):
            tokens, text = spelled_tokens(row)
            ids = [t.get("id") for t in tokens]  # an in-process arm of the same model: its own ids, not re-encoded
            own = ids if in_process(arms[labels[label]]) and ids and None not in ids else None
            todo_rows.append((row, tokens, text))
            items.append((request, text, own))
        for (row, tokens, text), local in zip(todo_rows, score_texts(backend, items)):
            scored = align(tokens, text, local)
            for token, s in zip(tokens, scored):
                token.update(s)
                if s["local_logprob"] is not None:
                    deltas.append(token["logprob"] - s["local_logprob"])
            per_row.append(dict(row_parity(tokens, scored), example_id=row["example_id"]))
        by_row = {r["example_id"]: dict(r["worst"], mean_abs_delta=r["mean_abs_delta"]) for r in per_row if r["worst"]}
        out[label] = dict(arm_parity(per_row), reference=local_arm.label, histogram=delta_histogram(deltas),
                          by_row=by_row)
    return out
