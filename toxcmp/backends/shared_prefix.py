"""Greedy decoding of a batch that shares one prompt prefix, attending to the prefix's KV once per step.

Replicating the prefix cache per sequence (`batch_repeat_interleave`) makes every decode step re-read
batch × prefix-length keys and values: on a 2-core CPU that memory traffic, not the matmuls, is the cost.
Here the prefix keys/values stay at batch size 1; each layer's attention scores the whole batch's queries
against them in one matmul, scores the per-sequence tail cache separately, and takes one softmax over both
score blocks. The cache the model sees holds only the tails. Exact attention (same scores, one softmax), so
greedy outputs match the one-`generate`-per-example reference (checked by tests and `toxcmp bench local`).

gpt-oss (eager attention with learned sinks; every other layer a sliding window of W positions) gets the same
treatment, exactly: a query at absolute position p in a window layer sees prefix and tail keys in (p − W, p], the
sink logit joins the softmax of every layer, and window layers keep only the last W − 1 prefix positions (all any
tail query can still see) — the prefix may be shorter or many windows longer than W. Its prefills (the prefix's
own and the tails') are one fused SDPA call each, the sink an extra key whose mask entry is its logit.
"""

from __future__ import annotations

import contextvars
from typing import Any

ATTN_NAME = "toxcmp_shared_prefix"
ATTN_NAME_SINKS = "toxcmp_shared_prefix_sinks"  # eager-style, for models with attention sinks (gpt-oss)
_active: contextvars.ContextVar[list | None] = contextvars.ContextVar("toxcmp_prefix_kv", default=None)
_positions: contextvars.ContextVar[Any] = contextvars.ContextVar("toxcmp_query_positions", default=None)
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask

    AttentionInterface.register(ATTN_NAME, shared_prefix_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_NAME, sdpa_mask)
    AttentionInterface.register(ATTN_NAME_SINKS, shared_prefix_sinks_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_NAME_SINKS, eager_mask)
    _registered = True


def has_sinks(model: Any) -> bool:
    return any(hasattr(m, "sinks") for m in model.modules())


def shared_prefix_sinks_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention with sinks and sliding windows over [shared prefix ‖ tail]; the model's own eager attention
    outside a shared-prefix decode."""
    import sys

    prefix = _active.get()
    if prefix is None:
        eager = sys.modules[type(module).__module__].eager_attention_forward
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    import torch

    k_pre, v_pre = prefix[module.layer_idx]  # (1, KVH, L, D): the whole prefix, or its last W − 1 in window layers
    positions = _positions.get()  # (n, q_len) absolute positions of the queries
    n, heads, q_len, dim = query.shape
    kv_heads, tail_len, n_pre = key.shape[1], key.shape[2], k_pre.shape[2]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    if q_len > 1:
        return _sinks_prefill(module, query, key, value, attention_mask, k_pre, v_pre, positions, scale)
    q = query.reshape(n, kv_heads, group * q_len, dim)
    s_pre = torch.matmul(q, k_pre.transpose(-1, -2)).reshape(n, kv_heads, group, q_len, n_pre) * scale
    s_tail = torch.matmul(q, key.transpose(-1, -2)).reshape(n, kv_heads, group, q_len, tail_len) * scale
    hidden = _hidden_prefix(module, positions, n_pre)
    if hidden is not None:
        s_pre = s_pre.masked_fill(hidden[:, None, None], float("-inf"))
    if attention_mask is not None:  # the model's own mask over the tail (padding, causal, window)
        s_tail = s_tail + attention_mask[:, :, None, :, -tail_len:].to(s_tail.dtype)
    sinks = module.sinks.reshape(1, kv_heads, group, 1, 1).expand(n, -1, -1, q_len, 1).to(s_tail.dtype)
    logits = torch.cat([s_pre, s_tail, sinks], dim=-1)
    logits = logits - logits.max(dim=-1, keepdim=True).values
    probs = torch.softmax(logits, dim=-1).to(value.dtype)
    p_pre, p_tail = probs[..., :n_pre], probs[..., n_pre:n_pre + tail_len]  # the sink column is dropped
    out = (torch.matmul(p_pre.reshape(n, kv_heads, group * q_len, n_pre), v_pre)
           + torch.matmul(p_tail.reshape(n, kv_heads, group * q_len, tail_len), value))
    return out.reshape(n, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _hidden_prefix(module, positions, n_pre):
    """In a window layer, which kept prefix keys each query cannot see, (n, q_len, n_pre): key j (absolute) is
    visible to a query at p when j > p − W. None outside window layers."""
    import torch

    window = getattr(module, "sliding_window", None)
    if not window:
        return None
    first = _prefix_len.get() - n_pre  # absolute position of the first kept prefix key
    j = torch.arange(n_pre, device=positions.device) + first
    return j[None, None, :] <= (positions[:, :, None] - window)


def _sinks_prefill(module, query, key, value, attention_mask, k_pre, v_pre, positions, scale):
    """The tails' prefill with sinks as one fused SDPA call: the sink is one more key (zero vector, zero value)
    whose mask entry is the head's sink logit, so SDPA's softmax is the eager one over [prefix ‖ tail ‖ sink] and
    the sink's weight multiplies nothing. Eager attention materialises the (q × keys) scores several times over
    (scale, mask, concatenation, max, softmax): a 1,009-token tail after a 1,722-token prefix spent ~2 s there."""
    import torch

    n, heads, q_len, dim = query.shape
    kv_heads, tail_len, n_pre = key.shape[1], key.shape[2], k_pre.shape[2]
    zero = query.new_zeros(n, kv_heads, 1, dim)
    keys = torch.cat([k_pre.expand(n, -1, -1, -1), key, zero], dim=2)
    values = torch.cat([v_pre.expand(n, -1, -1, -1), value, zero], dim=2)
    pre = query.new_zeros(n, 1, q_len, n_pre)
    window = getattr(module, "sliding_window", None)
    hidden = _hidden_prefix(module, positions, n_pre)
    if hidden is not None:
        pre = pre.masked_fill(hidden[:, None], float("-inf"))
    if attention_mask is None:  # no padding: causal over the tail, and the window in window layers
        k = torch.arange(tail_len, device=query.device)
        q = torch.arange(q_len, device=query.device)[:, None] + tail_len - q_len
        hidden = (k > q) | ((k <= q - window) if window else torch.zeros_like(k > q))
        tail = torch.zeros(q_len, tail_len, dtype=query.dtype, device=query.device).masked_fill(hidden, float("-inf"))
        tail = tail[None, None]
    else:  # the model's own (additive) mask over the tail: padding, causal, window
        tail = attention_mask[:, :, :, -tail_len:].to(query.dtype)
    sink = module.sinks.to(query.dtype).reshape(1, heads, 1, 1).expand(n, heads, q_len, 1)
    mask = torch.cat([pre.expand(n, heads, q_len, n_pre), tail.expand(n, heads, q_len, tail_len), sink], dim=-1)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scale,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


_prefix_len: contextvars.ContextVar[int] = contextvars.ContextVar("toxcmp_prefix_len", default=0)
_prefill_group: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("toxcmp_prefill_group", default=None)


def prefill_group() -> tuple[list[int], int] | None:
    """While `greedy_decode` prefills one group of its rows: (those rows, the batch size); else None. A forward
    hook reading each step's logits (the log-probability recorder) assembles the first step from the groups."""
    return _prefill_group.get()


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Drop-in for SDPA attention; outside a shared-prefix decode it *is* SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = _active.get()
    if prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    import torch

    k_pre, v_pre = prefix[module.layer_idx]  # (1, KVH, P, D)
    n, heads, q_len, dim = query.shape
    if q_len > 1:  # prefill of the tails: one pass, so the SDPA kernel over [prefix ‖ tail] is cheaper
        return _prefill(module, query, key, value, attention_mask, k_pre, v_pre, scaling, dropout, **kwargs)
    kv_heads, tail_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(n, kv_heads, group, q_len, dim)
    # prefix scores: fold the batch into the rows of one matmul per kv head, so the prefix is read once
    q_rows = q.permute(1, 0, 2, 3, 4).reshape(kv_heads, n * group * q_len, dim)
    s_pre = torch.matmul(q_rows, k_pre[0].transpose(-1, -2)) * scale  # (KVH, n*G*q, P)
    s_pre = s_pre.reshape(kv_heads, n, group, q_len, -1).permute(1, 0, 2, 3, 4)
    s_tail = torch.matmul(q.reshape(n, kv_heads, group * q_len, dim), key.transpose(-1, -2)) * scale
    s_tail = s_tail.reshape(n, kv_heads, group, q_len, tail_len)
    if attention_mask is None:
        if q_len > 1:  # no padding: plain causal mask over the tail
            causal = torch.ones(q_len, tail_len, dtype=torch.bool, device=query.device).tril(tail_len - q_len)
            s_tail = s_tail.masked_fill(~causal, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        s_tail = s_tail.masked_fill(~attention_mask[:, :, None, :, -tail_len:], float("-inf"))
    else:
        s_tail = s_tail + attention_mask[:, :, None, :, -tail_len:]
    probs = torch.softmax(torch.cat([s_pre, s_tail], dim=-1).float(), dim=-1).to(query.dtype)
    p_pre, p_tail = probs[..., : s_pre.shape[-1]], probs[..., s_pre.shape[-1]:]
    p_rows = p_pre.permute(1, 0, 2, 3, 4).reshape(kv_heads, n * group * q_len, -1)
    out_pre = torch.matmul(p_rows, v_pre[0]).reshape(kv_heads, n, group, q_len, dim).permute(1, 0, 2, 3, 4)
    out_tail = torch.matmul(p_tail.reshape(n, kv_heads, group * q_len, tail_len), value)
    out = out_pre + out_tail.reshape(n, kv_heads, group, q_len, dim)
    return out.reshape(n, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _prefill(module, query, key, value, attention_mask, k_pre, v_pre, scaling, dropout, **kwargs):
    import torch

    n, q_len, tail_len, n_pre = query.shape[0], query.shape[2], key.shape[2], k_pre.shape[2]
    keys = torch.cat([k_pre.expand(n, -1, -1, -1), key], dim=2)
    values = torch.cat([v_pre.expand(n, -1, -1, -1), value], dim=2)
    if attention_mask is None:
        tail = torch.ones(q_len, tail_len, dtype=torch.bool, device=query.device).tril(tail_len - q_len)
        attention_mask = tail[None, None].expand(n, 1, q_len, tail_len)
    visible = (torch.ones if attention_mask.dtype == torch.bool else torch.zeros)(
        n, 1, q_len, n_pre, dtype=attention_mask.dtype, device=query.device)
    mask = torch.cat([visible, attention_mask[..., -tail_len:].expand(n, 1, q_len, tail_len)], dim=-1)
    out = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=scaling,
                                                           enable_gqa=True)  # no repeat_kv copies of the prefix
    return out.transpose(1, 2).contiguous(), None


def prefix_reusable(model: Any) -> str | None:
    """None when a prefix KV cache can be reused across prompts; else the reason it cannot.

    Sliding-window layers (gpt-oss alternates them) keep only the last W positions, so a cached prefix longer
    than the window is not the cache a full prompt would have built — unless the window-aware attention with
    sinks (`shared_prefix_sinks_attention`) runs the decode, which it does for gpt-oss-style models.
    """
    config = model.config
    if has_sinks(model):  # exact only through the window-aware attention, which replaces eager attention
        if getattr(config, "_attn_implementation", None) not in ("eager", ATTN_NAME_SINKS):
            return f"sinks need eager attention for prefix reuse (the model runs {config._attn_implementation})"
        return None
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ["full_attention"])):
        return "the model has sliding-window attention layers"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return "the model uses sliding-window attention"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    return None


def supported(model: Any) -> bool:
    """Whether the shared-prefix attention (prefix read once per step) applies; else the replicated cache is used."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if has_sinks(model):
        return prefix_reusable(model) is None and implementation in ("eager", ATTN_NAME_SINKS)
    return prefix_reusable(model) is None and implementation in ("sdpa", ATTN_NAME)


def cache_kwarg(model: Any) -> str:
    """transformers 5.2x renamed `past_key_values` to `cache`; older releases only know the old name."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def keeps_logits(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (computing the vocabulary projection for the last
    positions only)."""
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters


def output_cache(output: Any) -> Any:
    return getattr(output, "cache", None) if hasattr(output, "cache") else getattr(output, "past_key_values", None)


def prefix_kv(cache: Any) -> list:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _preallocated_cache(groups_kv: list[tuple[list[int], list]], batch: int, width: int, extra: int) -> Any:
    """One tail cache for the whole batch, its rows right-aligned in `width` columns (the rest is padding the mask
    hides), with room for `extra` more tokens written in place: no per-step concatenation of the whole cache."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, k_buf, v_buf, filled):
            super().__init__()
            self.k_buf, self.v_buf, self.filled = k_buf, v_buf, filled
            self.keys, self.values = k_buf[..., :filled, :], v_buf[..., :filled, :]
            self.device, self.is_initialized = k_buf.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            n, k = self.filled, key_states.shape[-2]
            self.k_buf[..., n:n + k, :].copy_(key_states)
            self.v_buf[..., n:n + k, :].copy_(value_states)
            self.filled = n + k
            self.keys, self.values = self.k_buf[..., :n + k, :], self.v_buf[..., :n + k, :]
            return self.keys, self.values

    layers = []
    for layer in range(len(groups_kv[0][1])):
        k0, _ = groups_kv[0][1][layer]
        shape = (batch, k0.shape[1], width + extra, k0.shape[3])
        k_buf = torch.empty(shape, dtype=k0.dtype, device=k0.device)
        v_buf = torch.empty(shape, dtype=k0.dtype, device=k0.device)
        k_buf[..., :width, :].zero_()  # padding the mask hides: zeros, never NaN times a zero weight
        v_buf[..., :width, :].zero_()
        for rows, kv in groups_kv:
            k, v = kv[layer]
            index = torch.tensor(rows, device=k0.device)
            k_buf[index, :, width - k.shape[2]:width] = k
            v_buf[index, :, width - v.shape[2]:width] = v
        layers.append(PreallocatedLayer(k_buf, v_buf, width))
    cache = DynamicCache()
    cache.layers = layers
    return cache


def prefill(model: Any, input_ids: Any, **kwargs: Any) -> Any:
    """The shared prefix's own forward pass (only its KV is kept). A model with sinks runs it through the fused
    sinks prefill (`_sinks_prefill`, an empty prefix before it) instead of its eager attention: the 1,722-token
    prefix of the gpt-oss-shaped model took 1.5 s eager. Any other model runs as it is."""
    import torch

    if not (has_sinks(model) and supported(model)):
        return model(input_ids=input_ids, use_cache=True, **kwargs)
    _register()
    if model.config._attn_implementation != ATTN_NAME_SINKS:
        model.set_attn_implementation(ATTN_NAME_SINKS)
    config, weight = model.config, next(model.parameters())
    empty = torch.empty(1, config.num_key_value_heads, 0, config.head_dim, dtype=weight.dtype, device=weight.device)
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
    token, length, where = _active.set([(empty, empty)] * config.num_hidden_layers), _prefix_len.set(0), \
        _positions.set(positions)
    try:
        return model(input_ids=input_ids, position_ids=positions, use_cache=True, **kwargs)
    finally:
        _positions.reset(where)
        _prefix_len.reset(length)
        _active.reset(token)


def greedy_decode(model: Any, prefix: list, n_prefix: int, tails: list[list[int]], pad: int, eos: set[int],
                  max_new_tokens: int, prefill_groups: list[list[int]] | None = None,
                  on_tail: Any = None) -> list[list[int]]:
    """Tails after a shared prefix → greedy new tokens per sequence (cut after the first EOS).

    The tails are prefilled in `prefill_groups` (row indices; each group left-padded to its own longest tail, so
    a long outlier pads only its group), then every row decodes in one loop: a decode step costs about the same
    for 3 rows as for 32 on a CPU (the weights are read once per step either way), so one loop for the batch
    instead of one per prefill group. `on_tail(row, kv)`, when given, receives each row's KV after the prefix once
    it is decoded: per layer (keys, values) views over its tail and its new tokens, the last new token left out
    (it was never fed; see toxcmp.backends.local_tails)."""
    import torch
    from transformers import DynamicCache

    _register()
    name = ATTN_NAME_SINKS if has_sinks(model) else ATTN_NAME
    if model.config._attn_implementation != name:
        model.set_attn_implementation(name)  # SDPA / eager everywhere else: the function delegates when inactive
    device = next(model.parameters()).device
    groups = prefill_groups or [list(range(len(tails)))]
    width = max(len(t) for t in tails)
    cache_arg = cache_kwarg(model)
    token = _active.set(prefix)
    length = _prefix_len.set(n_prefix)
    first = torch.empty(len(tails), dtype=torch.long, device=device)
    keep = {"logits_to_keep": 1} if keeps_logits(model) else {}
    groups_kv = []
    try:
        with torch.inference_mode():
            for rows in groups:
                group_width = max(len(tails[r]) for r in rows)
                ids = torch.tensor([[pad] * (group_width - len(tails[r])) + tails[r] for r in rows], device=device)
                mask = torch.tensor([[0] * (group_width - len(tails[r])) + [1] * len(tails[r]) for r in rows],
                                    device=device)
                positions = (n_prefix + mask.cumsum(-1) - 1).clamp(min=n_prefix)
                cache = DynamicCache()
                where, group = _positions.set(positions), _prefill_group.set((rows, len(tails)))
                try:
                    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                   **keep, **{cache_arg: cache}).logits[:, -1, :]
                finally:
                    _positions.reset(where)
                    _prefill_group.reset(group)
                first[torch.tensor(rows, device=device)] = logits.argmax(-1)
                groups_kv.append((rows, prefix_kv(cache)))
            cache = _preallocated_cache(groups_kv, len(tails), width, max_new_tokens)
            del groups_kv
            mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
            positions = torch.tensor([[n_prefix + len(t) - 1] for t in tails], device=device)
            done = torch.zeros(len(tails), dtype=torch.bool, device=device)
            eos_t = torch.tensor(sorted(eos), device=device)
            generated: list[torch.Tensor] = []
            nxt = first
            for step in range(max_new_tokens):
                if step:
                    where = _positions.set(positions)
                    try:
                        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                       **{cache_arg: cache}).logits[:, -1, :]
                    finally:
                        _positions.reset(where)
                    nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, pad), nxt)  # finished rows feed padding, as generate does
                generated.append(nxt)
                done = done | torch.isin(nxt, eos_t)
                if bool(done.all()):
                    break
                ids = nxt[:, None]
                positions = positions + 1
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
    finally:
        _active.reset(token)
        _prefix_len.reset(length)
    rows = torch.stack(generated, dim=1).tolist()
    out = [row[: next((k + 1 for k, t in enumerate(row) if t in eos), len(row))] for row in rows]
    if on_tail is not None:  # row r's columns: its tail right-aligned before `width`, then its fed new tokens
        for r, (tail, new) in enumerate(zip(tails, out)):
            start, stop = width - len(tail), width + len(new) - 1
            on_tail(r, [(layer.k_buf[r:r + 1, :, start:stop], layer.v_buf[r:r + 1, :, start:stop])
                        for layer in cache.layers])
    return out


def forced_logits(model: Any, prefix: list, n_prefix: int, tails_kv: list[list], inputs: list[list[int]],
                  pad: int) -> list[Any]:
    """Teacher forcing of several rows in one forward pass after a shared prefix: row r's cache is its kept tail
    KV `tails_kv[r]` (per layer (1, kv heads, tail length, head dim); see toxcmp.backends.local_tails), right-aligned
    as in `greedy_decode`; `inputs[r]` (the prompt's last token, then the scored tokens but the last) runs on top,
    right-padded (causal: no real token sees the padding). Returns each row's logits at its inputs (len × vocab)."""
    import torch

    _register()
    name = ATTN_NAME_SINKS if has_sinks(model) else ATTN_NAME
    if model.config._attn_implementation != name:
        model.set_attn_implementation(name)
    device = next(model.parameters()).device
    lengths = [kv[0][0].shape[2] for kv in tails_kv]
    width, q_len = max(lengths), max(len(x) for x in inputs)
    cache = _preallocated_cache([([r], kv) for r, kv in enumerate(tails_kv)], len(inputs), width, q_len)
    ids = torch.tensor([x + [pad] * (q_len - len(x)) for x in inputs], device=device)
    mask = torch.tensor([[0] * (width - n) + [1] * (n + q_len) for n in lengths], device=device)
    positions = torch.tensor([[n_prefix + n + j for j in range(q_len)] for n in lengths], device=device)
    token, length, where = _active.set(prefix), _prefix_len.set(n_prefix), _positions.set(positions)
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           **{cache_kwarg(model): cache}).logits
    finally:
        _positions.reset(where)
        _prefix_len.reset(length)
        _active.reset(token)
    return [logits[r, :len(x)] for r, x in enumerate(inputs)]
