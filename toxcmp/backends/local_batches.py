"""How the local backend cuts its rows into batches: the batch size (a number, or what fits in memory) and the
length-sorted partition that prices padding against one more decode loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toxcmp.backends.local_model import LoadedModel

MAX_AUTO_BATCH = 64
# The shared-prefix decode (one loop per batch, rows padded only within their prefill group). Its batches: every
# decode step reads each row's tail K/V up to the batch's longest tail (~12 µs a row-column, SmolLM2, 2-core CPU)
# on top of a fixed ~110 ms (the weights), so a batch more costs as much as ~9,000 such columns per step; cut at
# that price, one long outlier gets a batch of its own. (Measured with PyTorch's MKL linears; with the oneDNN ones
# (cpu_linear) the fixed part is ~45 ms and a row-column ~3 µs, a ratio of ~15,000: not re-tuned.) A prefill group
# more costs one forward call, about as much as prefilling 32 tokens (prefill ~230 tokens/s).
ONE_LOOP_STEP_COST = 9000
PREFILL_CALL_TOKENS = 32


def length_buckets(items: list[tuple[int, list[int]]], size: int, shared: int = 0,
                   step_cost_tokens: int = 0) -> list[list[tuple[int, list[int]]]]:
    """Sort by length, then cut into batches of at most `size` that minimise estimated work.

    A batch costs its padded prefill (n × longest tail; `shared` prefix tokens are cached, not recomputed) plus
    `step_cost_tokens` for its decode loop, the price of one more batch expressed in prefill tokens. Optimal
    contiguous partition by dynamic programming over the sorted lengths.
    """
    ordered = sorted(items, key=lambda it: len(it[1]))
    tails = [max(1, len(ids) - shared) for _, ids in ordered]
    n = len(ordered)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - size), j):  # batch = ordered[i:j]; its width is tails[j-1]
            cost = best[i] + (j - i) * tails[j - 1] + step_cost_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches = []
    j = n
    while j > 0:
        batches.append(ordered[cut[j]:j])
        j = cut[j]
    return batches[::-1]


def parse_batch_size(value: str | int | None, suffix: str = "") -> int | None:
    """None means auto. `suffix`: where the value was written, for the error."""
    if value in (None, "", "auto"):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        from toxcmp.errors import UsageError

        raise UsageError(f"--batch-size must be 'auto' or a positive integer (got {value!r}){suffix}",
                         "e.g. --batch-size 8")
    return size


def auto_batch_size(loaded: LoadedModel, tokens_per_sequence: int, device: str) -> int:
    """Largest batch whose KV cache and logits fit in a quarter of free memory, capped at MAX_AUTO_BATCH."""
    config = loaded.model.config
    layers = getattr(config, "num_hidden_layers", 24)
    heads = getattr(config, "num_key_value_heads", None) or getattr(config, "num_attention_heads", 16)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // getattr(config, "num_attention_heads", 16)
    width = next(loaded.model.parameters()).element_size()
    per_sequence = 2 * layers * heads * head_dim * width * tokens_per_sequence + 4 * config.vocab_size * 2
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
    else:
        import psutil

        free = psutil.virtual_memory().available
    return max(1, min(MAX_AUTO_BATCH, int(free * 0.25 // max(1, per_sequence))))
