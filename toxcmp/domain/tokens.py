"""Token facts every layer needs about a loaded model, with no heavy import: callers pass the model and tokenizer."""

from __future__ import annotations

from typing import Any


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
