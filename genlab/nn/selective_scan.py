"""The selective scan of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
Algorithm 2 / eq. 2a-2b with the zero-order-hold discretisation of eq. 4), as VMamba's SS2D calls it: K scan
directions share one call, each with its own B_t and C_t.

For every channel d of every direction k, with Δ = softplus(δ + δ_bias), Ā_t = exp(Δ_t A) and B̄_t u_t = Δ_t B_t u_t:

    h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t u_t          (h ∈ R^N, N = d_state)
    y_t = C_t · h_t + D u_t

Four ways to run it, one result:

- ``selective_scan_naive``: the recurrence one step at a time under autograd (the test oracle);
- on a CPU, the same recurrence as one autograd function (``_Recurrence``: a loop of elementwise products forward,
  the reverse recurrence backward, only the states kept): about 3x faster than the chunked form below there;
- the pure-PyTorch chunked scan (other devices without mamba-ssm, autograd): inside a chunk of T steps the state
  is a decayed sum, h_t = exp(S_t) h_0 + Σ_{s≤t} exp(S_t − S_s) Δ_s B_s u_s with S_t = Σ_{r≤t} Δ_r A, computed
  with a masked (T, T) decay matrix (every exponent ≤ 0, so nothing overflows); the state h_T carries to the next
  chunk. Work is O(L T)
  per channel and state (T = 8 by default), memory O(L T) for autograd's recomputation in the backward;
- on a GPU with ``mamba-ssm`` installed, its fused CUDA kernel (``selective_scan_fn``; ``pip install genlab[gpu]``).
  The first scan of a process says on stderr which path runs.
  mamba-ssm is the maintained reference kernel (state-spaces/mamba, the one VMamba's and LaMamba-Diff's kernels
  derive from); ``mambapy`` is a pure-PyTorch parallel scan, i.e. no faster than the chunked scan here on a GPU.

``selective_scan`` is a ``torch.library`` custom op (``genlab::selective_scan``), so ``FlopCounterMode`` sees it as
one op and counts it with ``scan_flops`` (VMamba's ``flops_selective_scan_fn``: 9 B L D N for the recurrence, plus
B D L for the D skip; counted as the counter counts a matmul, 2 per multiply-add, so 18 B L D N + 2 B D L) instead
of the elementwise work inside the chunked form, which the counter would not see (and whose matmuls depend on T).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

CHUNK = 8  # steps per chunk of the pure-PyTorch scan: the (T, T) decay matrix costs T per step, channel and state
_PATH_LOGGED: set[str] = set()


def _discretise(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Tensor | None):
    """(b, K*D, L) u and δ, (K*D, N) A, (b, K, N, L) B -> Δ (b, K, D, L), ΔA (b, K, D, L, N), ΔBu (b, K, D, L, N)."""
    b, KD, L = u.shape
    K, N = B.shape[1], A.shape[1]
    f = torch.promote_types(u.dtype, torch.float32)  # the state's dtype: float32, or float64 for float64 inputs
    if delta_bias is not None:
        delta = delta + delta_bias.view(1, KD, 1)
    dt = F.softplus(delta.to(f)).view(b, K, KD // K, L)  # (b, K, D, L)
    dA = dt.unsqueeze(-1) * A.to(f).view(1, K, KD // K, 1, N)  # (b, K, D, L, N), every entry <= 0
    dBu = (dt * u.to(f).view(b, K, KD // K, L)).unsqueeze(-1) * B.to(f).transpose(-1, -2).unsqueeze(2)
    return dA, dBu


def selective_scan_naive(u, delta, A, B, C, D=None, delta_bias=None) -> Tensor:
    """The recurrence one step at a time: the oracle the chunked and the GPU scans are tested against.
    Shapes as ``selective_scan``."""
    b, KD, L = u.shape
    dA, dBu = _discretise(u, delta, A, B, delta_bias)
    h = dA.new_zeros(dA.shape[:3] + dA.shape[4:])  # (b, K, D, N)
    Cf = C.to(h.dtype)
    ys = []
    for t in range(L):
        h = torch.exp(dA[:, :, :, t]) * h + dBu[:, :, :, t]
        ys.append(torch.einsum("bkdn,bkn->bkd", h, Cf[..., t]))
    y = torch.stack(ys, dim=-1).reshape(b, KD, L)
    if D is not None:
        y = y + D.to(y.dtype).view(1, KD, 1) * u.to(y.dtype)
    return y.to(u.dtype)


def _decay(a: Tensor) -> Tensor:
    """(b, K, D, T, N) log-decays a_r -> (b, K, D, T, T, N) exp(a_{s+1} + ... + a_t) for s <= t, 0 above the diagonal,
    as exp(S_t - S_s) of the chunk's cumulative sums S (each exponent <= 0: no overflow). The difference loses
    float32 precision as the chunk grows (about 1e-5 at T = 32, 3e-5 at T = 128 in the tests), so chunks stay short."""
    T = a.shape[3]
    S = a.cumsum(dim=3)
    causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril().view(T, T, 1)
    return torch.exp((S.unsqueeze(4) - S.unsqueeze(3)).masked_fill(~causal, float("-inf")))


def _scan_chunked(u, delta, A, B, C, D, delta_bias, chunk: int) -> Tensor:
    """The chunked form of the module docstring; differentiable, any device."""
    b, KD, L = u.shape
    dA, dBu = _discretise(u, delta, A, B, delta_bias)  # (b, K, D, L, N)
    Cf = C.to(dA.dtype).transpose(-1, -2).unsqueeze(2)  # (b, K, 1, L, N)
    h = dA.new_zeros(dA.shape[:3] + dA.shape[4:])  # (b, K, D, N)
    ys = []
    for start in range(0, L, chunk):
        a, x = dA[:, :, :, start : start + chunk], dBu[:, :, :, start : start + chunk]  # (b, K, D, T, N)
        hs = torch.einsum("bkdtsn,bkdsn->bkdtn", _decay(a), x) + torch.exp(a.cumsum(3)) * h.unsqueeze(3)
        ys.append((hs * Cf[:, :, :, start : start + chunk]).sum(-1))  # (b, K, D, T)
        h = hs[:, :, :, -1]
    y = torch.cat(ys, dim=-1).reshape(b, KD, L)
    if D is not None:
        y = y + D.to(y.dtype).view(1, KD, 1) * u.to(y.dtype)
    return y.to(u.dtype)


class _Recurrence(torch.autograd.Function):
    """h_t = a_t ⊙ h_{t-1} + x_t (h_0 = 0) along dim -2 of (..., L, N) a and x -> every h_t, (..., L, N).

    Forward and backward are loops over t of elementwise products on (..., N) slices, so autograd keeps one tensor
    (the states) instead of a graph per step; the backward is the reverse recurrence g_t = ∂y/∂h_t + a_{t+1} g_{t+1},
    ∂x_t = g_t, ∂a_t = g_t ⊙ h_{t-1}."""

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:
        a_t, x_t = a.movedim(-2, 0).contiguous(), x.movedim(-2, 0).contiguous()  # (L, ..., N): one slice per t
        h = torch.empty_like(a_t)
        h[0] = x_t[0]
        for t in range(1, a_t.shape[0]):
            torch.addcmul(x_t[t], a_t[t], h[t - 1], out=h[t])
        ctx.save_for_backward(a_t, h)
        return h.movedim(0, -2)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a_t, h = ctx.saved_tensors
        g = grad.movedim(-2, 0).contiguous().clone()  # (L, ..., N): ∂/∂h_t, accumulated from the end
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(a_t[t + 1], g[t + 1])
        grad_a = torch.zeros_like(g)
        torch.mul(g[1:], h[:-1], out=grad_a[1:])
        return grad_a.movedim(0, -2), g.movedim(0, -2)


def _scan_sequential(u, delta, A, B, C, D, delta_bias, chunk: int) -> Tensor:
    """The recurrence step by step (``_Recurrence``), differentiable: the CPU's scan. Equal to the naive scan; on a
    CPU faster than the chunked form, whose (T, T) decay matrices cost T times the work in small batched products.
    ``chunk`` is unused (the signature is the chunked scan's)."""
    b, KD, L = u.shape
    dA, dBu = _discretise(u, delta, A, B, delta_bias)  # (b, K, D, L, N)
    h = _Recurrence.apply(torch.exp(dA), dBu)  # (b, K, D, L, N)
    y = (h * C.to(h.dtype).transpose(-1, -2).unsqueeze(2)).sum(-1).reshape(b, KD, L)
    if D is not None:
        y = y + D.to(y.dtype).view(1, KD, 1) * u.to(y.dtype)
    return y.to(u.dtype)


def _scan_torch(*args) -> Tensor:
    """The pure-PyTorch scan for the inputs' device: step by step on a CPU, chunked elsewhere."""
    return (_scan_sequential if args[0].device.type == "cpu" else _scan_chunked)(*args)


def _mamba_kernel():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def scan_path(device: torch.device) -> str:
    """Which implementation runs on ``device``: ``mamba-ssm`` (CUDA kernel) or ``torch`` (the chunked scan)."""
    return "mamba-ssm" if device.type == "cuda" and _mamba_kernel() is not None else "torch"


def _log_path(path: str) -> None:
    if path not in _PATH_LOGGED:
        _PATH_LOGGED.add(path)
        how = "mamba-ssm's CUDA kernel" if path == "mamba-ssm" else "the pure-PyTorch scan"
        hint = "" if path == "mamba-ssm" else " (on a GPU, `pip install genlab[gpu]` adds mamba-ssm's kernel)"
        print(f"genlab: selective scan: {how}{hint}", file=sys.stderr)


@torch.library.custom_op("genlab::selective_scan", mutates_args=())
def _selective_scan_op(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor, chunk: int
) -> Tensor:
    return _scan_torch(u, delta, A, B, C, D, delta_bias, chunk)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, delta_bias, chunk):
    return torch.empty_like(u)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:7])
    ctx.chunk = inputs[7]


def _backward(ctx, grad):
    """Recompute the pure-PyTorch scan under autograd and differentiate it (its memory is not kept forward)."""
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in ctx.saved_tensors]
    with torch.enable_grad():
        out = _scan_torch(*inputs, ctx.chunk)
        grads = torch.autograd.grad(out, inputs, grad, allow_unused=True)
    return (*grads, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.genlab.selective_scan)
def scan_flops(u_shape, delta_shape, A_shape, B_shape, *args, out_shape=None, **kwargs) -> int:
    """VMamba's count for one selective scan with a D skip (9 B L D N + B D L multiply-adds), at 2 FLOPs each."""
    b, KD, L = u_shape
    N = A_shape[1]
    return 2 * (9 * b * L * KD * N + b * KD * L)


def selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor, *, chunk: int = CHUNK
) -> Tensor:
    """u, δ (b, K*D, L); A (K*D, N) (negative: A = -exp(A_log)); B, C (b, K, N, L); D, δ_bias (K*D,) -> y (b, K*D, L)
    in u's dtype (the state is float32). mamba-ssm's kernel on CUDA when installed, else the pure-PyTorch scan
    (step by step on a CPU, in chunks of ``chunk`` steps elsewhere)."""
    path = scan_path(u.device)
    _log_path(path)
    if path == "mamba-ssm":
        kernel = _mamba_kernel()
        return kernel(u, delta, A, B, C, D.float(), None, delta_bias.float(), delta_softplus=True)
    return _selective_scan_op(u, delta, A, B, C, D, delta_bias, chunk)
