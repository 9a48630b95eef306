"""fp32 linear layers through oneDNN packed weights (toxcmp.backends.cpu_linear): what runs inside the context is
oneDNN's product, outside it (and in another thread meanwhile) PyTorch's own, bit for bit."""

from __future__ import annotations

import threading

import pytest

torch = pytest.importorskip("torch")

from toxcmp.backends import cpu_linear  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up = torch.nn.Linear(576, 1536)  # as wide as SmolLM2's: small ones round alike
        self.down = torch.nn.Linear(1536, 32, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def _onednn(x, layer):  # the oracle: oneDNN's op called directly on a weight packed here
    packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), None)
    return torch.ops.mkldnn._linear_pointwise(x, packed, layer.bias, "none", [], "")


def _plain(model, x):
    return torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, model.up.weight, model.up.bias)),
                                      model.down.weight)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_inside_the_context_the_layers_run_onednn_outside_pytorch_bit_for_bit():
    model = Tiny().eval()
    x = torch.randn(3, 5, 576)
    with torch.inference_mode():
        with cpu_linear.packed(model) as count:
            inside = model(x)
        outside = model(x)
        expected = _onednn(torch.relu(_onednn(x, model.up)), model.down)
        plain = _plain(model, x)
    assert count == 2
    assert torch.equal(inside, expected)
    assert torch.equal(outside, plain)
    assert not torch.equal(inside, plain)  # the two kernels round differently: the check above can tell them apart
    assert torch.allclose(inside, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_another_thread_keeps_pytorchs_kernels_while_one_thread_is_inside():
    model = Tiny().eval()
    x = torch.randn(7, 576)
    entered, checked, seen = threading.Event(), threading.Event(), {}

    def inside():
        with torch.inference_mode(), cpu_linear.packed(model):
            entered.set()
            checked.wait(10)

    worker = threading.Thread(target=inside)
    worker.start()
    try:
        assert entered.wait(10)
        with torch.inference_mode():
            seen["other"] = model(x)
            seen["plain"] = _plain(model, x)
    finally:
        checked.set()
        worker.join()
    assert torch.equal(seen["other"], seen["plain"])


def test_a_model_that_is_not_fp32_on_the_cpu_is_left_alone():
    model = Tiny().to(torch.bfloat16).eval()
    x = torch.randn(2, 576, dtype=torch.bfloat16)
    with torch.inference_mode():
        with cpu_linear.packed(model) as count:
            inside = model(x)
        outside = model(x)
    assert count == 0
    assert torch.equal(inside, outside)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_a_replaced_or_changed_weight_is_packed_again():
    model = Tiny().eval()
    x = torch.randn(4, 576)
    with torch.inference_mode(), cpu_linear.packed(model):
        model(x)
        model.down.weight = torch.nn.Parameter(torch.randn(32, 1536))
        after = model(x)
        expected = _onednn(torch.relu(_onednn(x, model.up)), model.down)
    assert torch.equal(after, expected)
    with torch.no_grad():
        model.up.weight.mul_(2)  # changed in place: the same Parameter, a new version
    with torch.inference_mode(), cpu_linear.packed(model):
        changed = model(x)
        expected = _onednn(torch.relu(_onednn(x, model.up)), model.down)
    assert torch.equal(changed, expected)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_only_the_models_entered_run_packed():
    inside, other = Tiny().eval(), Tiny().eval()
    x = torch.randn(4, 576)
    with torch.inference_mode():
        with cpu_linear.packed(other):
            pass  # `other`'s layers are wrapped now
        with cpu_linear.packed(inside):
            seen = other(x)
        plain = _plain(other, x)
    assert torch.equal(seen, plain)
