"""Token facts every layer needs about a loaded model, with no heavy import: callers pass the model and tokenizer."""

from __future__ import annotations

from typing import Any, Sequence


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token id that ends generation: the generation config's and the tokenizer's."""
    ids: set[int] = set()
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def token_strings(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's characters, cut from the cumulative decoding so that they spell the decoded text (a leading
    space belongs to its token; a character split over byte tokens belongs to the token that completes it)."""
    out, before = [], ""
    for j in range(len(ids)):
        now = tokenizer.decode(list(ids[: j + 1]), skip_special_tokens=False)
        out.append(now[len(before):] if now.startswith(before) else now)
        before = now
    return out
