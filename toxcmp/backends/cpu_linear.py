"""fp32 linear layers through oneDNN with weights packed once, for the shared-prefix strategy on a CPU (issue 25).

PyTorch sends an fp32 `nn.Linear` on the CPU to MKL's sgemm. On this project's machines (AMD EPYC, AVX-512) that
is the decode step's largest cost: SmolLM2's vocabulary projection (49,152 × 576) for a 32-row step took 67 ms
through MKL and 24 ms through oneDNN with the weight reordered once (`mkldnn._reorder_linear_weight`, the packing
torch.compile's CPU backend does), the 576 → 1,536 projections 0.51 → 0.34 ms (measured in one process, 2 threads).
Same dtype, same products: values differ from MKL's by summation order only (≤ 2e-4 on logits of order 10), and
oneDNN's result for a row does not depend on the other rows of its batch (MKL's does).

`packed(model)` is a context: inside it, in this thread only, every fp32 `nn.Linear` of `model` (and of no other
model) on the CPU runs through its packed weight; outside it (another strategy, another thread) the layer runs as
transformers wrote it. The packed copies are made on first use and kept with the model, made again if a weight is
replaced or changed in place."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import weakref
from typing import Any, Iterator

# the models whose layers run packed in this context (a layer of any other model keeps PyTorch's kernels)
_active: contextvars.ContextVar[frozenset] = contextvars.ContextVar("toxcmp_packed_linear", default=frozenset())
_installed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → its packed linear layers
_lock = threading.Lock()


def available(model: Any) -> bool:
    """Whether the packed path applies: fp32 weights on the CPU and a PyTorch built with oneDNN."""
    import torch

    first = next(model.parameters(), None)
    return (first is not None and first.device.type == "cpu" and first.dtype == torch.float32
            and torch.backends.mkldnn.is_available())


@contextlib.contextmanager
def packed(model: Any) -> Iterator[int]:
    """Run `model`'s fp32 linear layers through oneDNN packed weights in this thread; yields how many layers
    that is (0 where the path does not apply, and nothing changes)."""
    count = _install(model) if available(model) else 0
    token = _active.set(_active.get() | {id(model)} if count else _active.get())
    try:
        yield count
    finally:
        _active.reset(token)


def _install(model: Any) -> int:
    with _lock:
        if model not in _installed:
            import torch

            layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
            for layer in layers:
                _wrap(layer, id(model))
            _installed[model] = len(layers)
        return _installed[model]


def _wrap(layer: Any, owner: int) -> None:
    """The layer's forward becomes: packed oneDNN product inside `packed(...)`, the original one outside."""
    import torch

    original = layer.forward
    weights: dict[str, Any] = {}

    def forward(x):
        if owner not in _active.get() or x.dtype != torch.float32 or x.device.type != "cpu":
            return original(x)
        held = weights.get("source")  # packed on first use; again if the weight was replaced or changed in place
        if held is None or held[0] is not layer.weight or held[1] != _version(layer.weight):
            with torch.inference_mode():
                weights["packed"] = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), None)
            weights["source"] = (layer.weight, _version(layer.weight))
        x = x if x.is_contiguous() else x.contiguous()
        return torch.ops.mkldnn._linear_pointwise(x, weights["packed"], layer.bias, "none", [], "")

    layer.forward = forward


def _version(tensor: Any) -> int:
    """The tensor's in-place version counter; an inference-mode tensor has none (and cannot change outside it)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1
