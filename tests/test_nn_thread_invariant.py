"""genlab.nn's conv and LayerNorm forms equal torch's, and their gradients do not change with the thread count."""

import torch

from genlab.nn.conv import DepthwiseConv2d, MatmulConv2d, depthwise_reference
from genlab.nn.norms import LayerNorm


def grads(module, x, threads):
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        module.zero_grad()
        module(x).square().sum().backward()
        return [p.grad.clone() for p in module.parameters()]
    finally:
        torch.set_num_threads(n)


def test_forms_equal_torch_and_their_gradients_ignore_threads():
    torch.manual_seed(0)
    x = torch.randn(16, 24, 12, 12)
    dw = DepthwiseConv2d(24, 7)
    assert torch.allclose(dw(x), depthwise_reference(dw, x), atol=1e-5)
    conv = MatmulConv2d(24, 8, 3, padding=1)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-5)
    patch = MatmulConv2d(24, 8, 4, stride=4)
    assert torch.allclose(patch(x), torch.nn.functional.conv2d(x, patch.weight, patch.bias, stride=4), atol=1e-5)
    ln = LayerNorm(12)
    torch.nn.init.normal_(ln.weight)
    assert torch.allclose(ln(x), torch.nn.functional.layer_norm(x, (12,), ln.weight, ln.bias), atol=1e-5)
    for m in (dw, conv, patch, ln):
        assert all(torch.equal(a, b) for a, b in zip(grads(m, x, 1), grads(m, x, 2))), type(m).__name__
