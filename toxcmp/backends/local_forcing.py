"""Teacher forcing in the local backend: the model's logits predicting given tokens after the exact prompt of a
request (token parity, label probabilities).

A prompt whose tail KV a run recording log p kept (toxcmp.backends.local_tails) runs only its last token and the
scored tokens, `BATCH_ROWS` rows a forward pass over the shared prefix (`shared_prefix.forced_logits`); any other
runs its whole prompt, or its tail after the shared prefix's KV where the prefix strategy holds it, one row a pass.
The last scored token is never fed: only the logits before it are needed."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.backends import local_tails, shared_prefix

# Rows a forward pass when their tails are kept: SmolLM2 runs 177 tokens/s one row of 33 tokens at a time and
# 302 tokens/s at 8 rows (308 at 16), 1 thread (measured); more rows only grow the logits held at once.
BATCH_ROWS = 8


def logits(items: Sequence[tuple[Any, Any, Any, list[int]]], stats: dict[str, int]) -> list[Any]:
    """`items`: (loaded model, its PrefixCache or None, request, scored ids) → each item's len(ids) × vocab logits,
    in order. Counts the rows scored over kept tails in `stats["tails_reused"]`."""
    import torch

    out: list[Any] = [None] * len(items)
    batches: dict[tuple[int, int], list[tuple[int, list[int], Any]]] = {}
    for k, (loaded, prefix, request, ids) in enumerate(items):
        prompt_ids = _prompt_ids(loaded, request)
        if not ids:
            out[k] = torch.empty(0, loaded.model.config.vocab_size)
            continue
        shares = prefix is not None and prefix.starts(prompt_ids)
        tail = local_tails.find(loaded.model, prompt_ids) if shares else None
        if tail is not None and tail.n_prefix == len(prefix.ids):
            batches.setdefault((id(loaded), id(prefix)), []).append((k, [prompt_ids[-1], *ids[:-1]], tail))
        else:
            out[k] = _whole_tail(loaded, prefix, prompt_ids, ids)
    from toxcmp.backends.local import _pad_id

    for rows in batches.values():
        loaded, prefix = items[rows[0][0]][0], items[rows[0][0]][1]
        pad, prefix_kv = _pad_id(loaded.tokenizer), shared_prefix.prefix_kv(prefix.cache)
        for start in range(0, len(rows), BATCH_ROWS):
            chunk = rows[start:start + BATCH_ROWS]
            kv = [[(key.to(loaded.device), value.to(loaded.device)) for key, value in tail.kv] for _, _, tail in chunk]
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
