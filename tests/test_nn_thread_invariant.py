"""genlab.nn's conv, attention and LayerNorm forms equal torch's; their gradients do not change with the threads."""

import torch

from genlab.nn.attention import attention, softmax, thread_dependent
from genlab.nn.conv import Conv2d, DepthwiseConv2d, MatmulConv2d, depthwise_reference, make_thread_invariant
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


def run_at(threads, fn, *args):
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn(*args)
    finally:
        torch.set_num_threads(n)


def conv_step(conv, x):
    """Output, input gradient and parameter gradients of one forward + backward."""
    conv.zero_grad()
    x = x.detach().requires_grad_()
    out = conv(x)
    out.square().sum().backward()
    return [out.detach(), x.grad, *(p.grad.clone() for p in conv.parameters())]


def test_conv2d_equals_torch_has_its_parameters_and_ignores_threads():
    # the tokenizers' convs: 3x3, 1x1, VQGAN's unpadded stride-2 downsample, PatchGAN's 4x4 stride 2 without bias
    torch.manual_seed(0)
    x = torch.randn(32, 16, 16, 16)
    for args, kw in [((16, 32, 3), {"padding": 1}), ((16, 8, 1), {}), ((16, 16, 3), {"stride": 2}),
                     ((16, 24, 4), {"stride": 2, "padding": 1, "bias": False})]:  # fmt: skip
        torch.manual_seed(1)
        ref = torch.nn.Conv2d(*args, **kw)
        torch.manual_seed(1)
        conv = Conv2d(*args, **kw)
        assert ref.state_dict().keys() == conv.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), conv.state_dict().values()))
        mine, torchs = conv_step(conv, x), conv_step(ref, x)
        # float rounding: sums of 8192 products in another order (relative to each tensor's norm)
        assert all((a - b).norm() <= 1e-5 * b.norm() for a, b in zip(mine, torchs)), (args, kw)
        one, two = run_at(1, conv_step, conv, x), run_at(2, conv_step, conv, x)
        assert all(torch.equal(a, b) for a, b in zip(one, two)), (args, kw)


def test_conv2d_weight_gradient_ignores_threads_where_onednns_does_not():
    # oneDNN runs this 3x3's forward and input gradient (equal at 1 and 2 threads), ATen its weight gradient
    torch.manual_seed(0)
    x, ref = torch.randn(64, 32, 32, 32), torch.nn.Conv2d(32, 32, 3, padding=1)
    conv = Conv2d(32, 32, 3, padding=1)
    conv.load_state_dict(ref.state_dict())
    theirs = [run_at(n, conv_step, ref, x) for n in (1, 2)]
    ours = [run_at(n, conv_step, conv, x) for n in (1, 2)]
    assert not torch.equal(theirs[0][2], theirs[1][2])  # oneDNN's weight gradient: the reason for Conv2d
    assert all(torch.equal(a, b) for a, b in zip(*ours))
    assert torch.equal(ours[0][0], theirs[0][0]) and torch.equal(ours[0][1], theirs[0][1])  # oneDNN's own


def test_conv2d_under_bf16_autocast_returns_bf16_and_float32_gradients():
    torch.manual_seed(0)
    conv, x = Conv2d(8, 8, 3, padding=1), torch.randn(4, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
    assert out.dtype == ref.dtype == torch.bfloat16 and torch.allclose(out.float(), ref.float(), atol=0.05)
    out.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32


def test_make_thread_invariant_swaps_plain_convs_only():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), DepthwiseConv2d(4, 3))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    assert make_thread_invariant(net) is net
    assert type(net[0]) is Conv2d and type(net[2]) is DepthwiseConv2d
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


def _attention_at_1_and_2_threads():
    # torch's CPU flash attention differed by an ulp at 1 and 2 threads here (17 tokens of head dim 8: DiMR's tiny)
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 2, 17, 8).unbind(0)
    assert thread_dependent(q, k) and not thread_dependent(torch.randn(1, 1, 64, 8), torch.randn(1, 1, 64, 8))

    def step():
        qkv = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attention(*qkv)
        out.square().sum().backward()
        return [out.detach(), *(t.grad for t in qkv)]

    return (q, k, v), run_at(1, step), run_at(2, step)


def test_attention_at_small_head_dims_ignores_threads_and_equals_sdpa():  # forward; q and k's grads: below
    (q, k, v), one, two = _attention_at_1_and_2_threads()
    assert torch.equal(one[0], two[0]) and torch.equal(one[3], two[3])  # the output and v's gradient
    assert torch.allclose(one[0], torch.nn.functional.scaled_dot_product_attention(q, k, v), atol=1e-6)


def test_attention_gradients_of_q_and_k_at_small_head_dims_ignore_threads():
    _, one, two = _attention_at_1_and_2_threads()
    assert torch.equal(one[1], two[1]) and torch.equal(one[2], two[2])


def test_softmax_gradient_ignores_threads_where_torchs_does_not():
    torch.manual_seed(0)
    x, g = torch.randn(2, 64, 6, 65, 17).unbind(0)

    def grad(fn):
        x_ = x.clone().requires_grad_()
        fn(x_).backward(g)
        return x_.grad

    ours = [run_at(n, grad, softmax) for n in (1, 2)]
    theirs = [run_at(n, grad, lambda t: t.softmax(-1)) for n in (1, 2)]
    assert torch.equal(ours[0], ours[1]) and not torch.equal(theirs[0], theirs[1])  # the reason it exists
    assert torch.allclose(ours[0], theirs[0], atol=1e-6)
