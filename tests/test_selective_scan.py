"""genlab.nn.selective_scan: the CPU's step-by-step scan and the chunked scan equal the per-step recurrence, values
and gradients; its FLOPs are the registered formula.

The mamba-ssm kernel path needs a GPU and the package; it is not tested here (this CI has no GPU)."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from genlab.nn.selective_scan import _scan_chunked, _scan_sequential, scan_path, selective_scan, selective_scan_naive


def inputs(b=2, K=4, D=6, N=3, L=70, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    A = -torch.rand(K * D, N, generator=g, dtype=dtype) * 4 - 0.1  # A = -exp(A_log) < 0
    return r(b, K * D, L), r(b, K * D, L), A, r(b, K, N, L), r(b, K, N, L), r(K * D), r(K * D)


@pytest.mark.parametrize("chunk", [1, 5, 8, 32])
@pytest.mark.parametrize("d_state", [1, 4])
def test_chunked_scan_equals_the_recurrence(chunk, d_state):
    args = inputs(N=d_state)
    ref = selective_scan_naive(*args)
    out = _scan_chunked(*args, chunk)
    assert out.shape == ref.shape == args[0].shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (out - ref).abs().max()


@pytest.mark.parametrize("d_state", [1, 4])
def test_the_cpu_scan_is_the_recurrence_and_the_op_runs_it(d_state):
    args = inputs(N=d_state)
    ref = selective_scan_naive(*args)
    assert torch.allclose(_scan_sequential(*args, 8), ref, atol=1e-6, rtol=1e-6)
    assert torch.equal(selective_scan(*args), _scan_sequential(*args, 8))


def test_the_recurrence_is_the_recurrence():
    # one channel, one state, two steps by hand: softplus(0) = log 2 = Δ; h1 = Δ B1 u1; h2 = e^{ΔA} h1 + Δ B2 u2
    u = torch.tensor([[[1.0, 2.0]]])
    delta, A = torch.zeros(1, 1, 2), torch.tensor([[-1.0]])
    B, C = torch.tensor([[[[3.0, 5.0]]]]), torch.tensor([[[[7.0, 11.0]]]])
    D, bias = torch.tensor([0.5]), torch.zeros(1)
    d = torch.log(torch.tensor(2.0))
    h1 = d * 3 * 1
    h2 = torch.exp(-d) * h1 + d * 5 * 2
    expect = torch.stack([7 * h1 + 0.5 * 1, 11 * h2 + 0.5 * 2]).view(1, 1, 2)
    for fn in (selective_scan_naive, selective_scan):
        assert torch.allclose(fn(u, delta, A, B, C, D, bias), expect, atol=1e-6)


@pytest.mark.parametrize("scan", ["op", "chunked"])
def test_gradients_equal_the_recurrence_gradients(scan):
    args = inputs(L=20, dtype=torch.float64)
    ours = [a.clone().requires_grad_() for a in args]
    ref = [a.clone().requires_grad_() for a in args]
    fn = selective_scan if scan == "op" else lambda *a: _scan_chunked(*a, 8)
    fn(*ours).square().sum().backward()
    selective_scan_naive(*ref).square().sum().backward()
    for a, b in zip(ours, ref):
        assert torch.allclose(a.grad, b.grad, atol=1e-9)


def test_flop_counter_counts_the_registered_formula_also_on_meta():
    b, K, D, N, L = 2, 4, 6, 3, 70
    expect = 2 * (9 * b * L * K * D * N + b * K * D * L)
    with FlopCounterMode(display=False) as counter:
        selective_scan(*inputs(b, K, D, N, L))
    assert counter.get_total_flops() == expect
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        out = selective_scan(*(torch.empty_like(a, device="meta") for a in inputs(b, K, D, N, L)))
    assert out.device.type == "meta" and counter.get_total_flops() == expect


def test_cpu_path_is_the_torch_scan():
    assert scan_path(torch.device("cpu")) == "torch"


def test_says_once_which_path_it_uses(capsys, monkeypatch):
    from genlab.nn import selective_scan as ss

    monkeypatch.setattr(ss, "_PATH_LOGGED", set())
    ss.selective_scan(*inputs(L=4))
    ss.selective_scan(*inputs(L=4))
    err = capsys.readouterr().err
    assert err.count("selective scan: the pure-PyTorch scan") == 1
