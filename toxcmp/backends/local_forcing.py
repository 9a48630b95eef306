"""Teacher forcing in the local backend: the model's logits predicting given tokens after the exact prompt of a
request (label probabilities), and each given token's log p and most likely ids (token parity).

A prompt whose KV a run recording log p kept (toxcmp.backends.local_tails) runs only what that generation did not
compute — the scored tokens from the first one its new tokens do not start with; the ones before take the log p
and top ids it recorded — `BATCH_ROWS` rows a forward pass over the shared prefix (`shared_prefix.forced_logits`).
Any other prompt runs whole, or its tail after the shared prefix's KV where the prefix strategy holds it, one row a
pass. The last scored token is never fed: only the logits before it are needed."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.backends import TokenScores, local_tails, shared_prefix

# Rows a forward pass when their tails are kept: SmolLM2 runs 177 tokens/s one row of 33 tokens at a time and
# 302 tokens/s at 8 rows (308 at 16), 1 thread (measured); more rows only grow the logits held at once.
BATCH_ROWS = 8

Item = tuple[Any, Any, Any, list[int]]  # (loaded model, its PrefixCache or None, request, scored ids)


def logits(items: Sequence[Item], stats: dict[str, int], kernels: str = "torch") -> list[Any]:
    """Each item's len(ids) × vocab logits, in order. Counts the rows scored over kept KV in
    `stats["tails_reused"]`."""
    kept = [_kept(item, kernels) for item in items]
    return _forced(items, kept, [0] * len(items), stats)


def scores(items: Sequence[Item], top_k: int, stats: dict[str, int], reuse: bool = True,
           kernels: str = "torch") -> list[TokenScores]:
    """Each item's scored ids' log p and `top_k` most likely ids per position, in order. Where the prompt's
    generation was kept and its new tokens start as the ids do, those positions are read from what it recorded
    (counted in `stats["tokens_reused"]`); `reuse=False` forces every token, as for an answer sharing none."""
    import torch

    kept = [_kept(item, kernels) for item in items]
    reused = [_shared(tail, ids, top_k) if reuse else 0 for tail, (_, _, _, ids) in zip(kept, items)]
    out = []
    for (_, _, _, ids), tail, d, row in zip(items, kept, reused, _forced(items, kept, reused, stats)):
        logprobs = list(tail.logprobs[:d]) if d else []
        top_ids = [list(t[:top_k]) for t in tail.top_ids[:d]] if d else []
        if row.shape[0]:
            logp = torch.log_softmax(row.float(), dim=-1)
            logprobs += logp[torch.arange(row.shape[0]), torch.tensor(ids[d:])].tolist()
            top_ids += torch.topk(logp, top_k, dim=-1).indices.tolist()
        out.append(TokenScores(logprobs, top_ids))
    stats["tokens_reused"] += sum(reused)
    return out


def _kept(item: Item, kernels: str) -> local_tails.Tail | None:
    loaded, prefix, request, ids = item
    if not ids or prefix is None:
        return None
    prompt_ids = _prompt_ids(loaded, request)
    if not prefix.starts(prompt_ids):
        return None
    tail = local_tails.find(loaded.model, prompt_ids, kernels)
    return tail if tail is not None and tail.n_prefix == len(prefix.ids) else None


def _shared(tail: local_tails.Tail | None, ids: Sequence[int], top_k: int) -> int:
    """How many leading `ids` the kept generation wrote, with their scores recorded to `top_k` alternatives."""
    if tail is None or not tail.top_ids or len(tail.top_ids[0]) < top_k:
        return 0
    d = 0
    for mine, generated in zip(ids, tail.generated[:len(tail.logprobs)]):
        if mine != generated:
            break
        d += 1
    return d


def _forced(items: Sequence[Item], kept: Sequence[local_tails.Tail | None], reused: Sequence[int],
            stats: dict[str, int]) -> list[Any]:
    """Each item's logits predicting ids[reused:] (0 × vocab when there are none)."""
    import torch

    out: list[Any] = [None] * len(items)
    batches: dict[tuple[int, int], list[tuple[int, list[int], list]]] = {}
    for k, ((loaded, prefix, request, ids), tail, d) in enumerate(zip(items, kept, reused)):
        if len(ids) == d:
            out[k] = torch.empty(0, loaded.model.config.vocab_size)
        elif tail is None:
            out[k] = _whole_tail(loaded, prefix, _prompt_ids(loaded, request), ids)
        else:  # the KV of the prompt and ids[:d − 1] (= the generation's first d − 1), then feed from there on
            kv_len = tail.n_tail - 1 + d
            kv = [(key[:, :, :kv_len], value[:, :, :kv_len]) for key, value in tail.kv]
            batches.setdefault((id(loaded), id(prefix)), []).append((k, [tail.tokens[kv_len], *ids[d:-1]], kv))
    from toxcmp.backends.local import _pad_id

    for rows in batches.values():
        loaded, prefix = items[rows[0][0]][0], items[rows[0][0]][1]
        pad, prefix_kv = _pad_id(loaded.tokenizer), shared_prefix.prefix_kv(prefix.cache)
        for start in range(0, len(rows), BATCH_ROWS):
            chunk = rows[start:start + BATCH_ROWS]
            kv = [[(key.to(loaded.device), value.to(loaded.device)) for key, value in row_kv] for _, _, row_kv in chunk]
            scored = shared_prefix.forced_logits(loaded.model, prefix_kv, len(prefix.ids), kv,
                                                 [x for _, x, _ in chunk], pad)
            for (k, _, _), row in zip(chunk, scored):
                out[k] = row
        stats["tails_reused"] += len(rows)
    return out


def _prompt_ids(loaded: Any, request: Any) -> list[int]:
    from toxcmp.backends.local_model import render_prompt

    return list(loaded.tokenizer(render_prompt(loaded.tokenizer, request), add_special_tokens=False)["input_ids"])


def _whole_tail(loaded: Any, prefix: Any, prompt_ids: list[int], ids: list[int]) -> Any:
    import torch

    start, kwargs = 0, {}
    if prefix is not None and prefix.starts(prompt_ids):
        start = len(prefix.ids)
        kwargs = {shared_prefix.cache_kwarg(loaded.model): prefix.expanded(1), "use_cache": True}
    if shared_prefix.keeps_logits(loaded.model):  # the vocabulary projection only where `ids` are predicted
        kwargs["logits_to_keep"] = len(ids)
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([(prompt_ids + ids[:-1])[start:]], device=loaded.device),
                              **kwargs).logits[0]
    return logits[-len(ids):]
