"""Normalisation layers: LayerNorm (DiT) or RMSNorm (Zhang & Sennrich 2019; LightningDiT), chosen by name."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["layernorm", "rmsnorm"]
NORMS = ("layernorm", "rmsnorm")


class LayerNorm(nn.LayerNorm):
    """(x - mean) / sqrt(var + eps) * weight + bias (Ba et al. 2016), with weights independent of the thread count.

    torch's ``nn.LayerNorm`` with its parameter names and init; only the affine step differs. ATen's fused CPU
    backward reduces d(weight) and d(bias) over the rows in one buffer per OpenMP thread and then adds the buffers,
    so those two gradients (and every weight after the first step) change with ``torch.get_num_threads()`` (issue
    27: smoke-maskgit differed at 1 and 2 threads in every tensor). Here the normalisation runs fused without the
    affine (its input gradient does not depend on the threads) and ``* weight + bias`` are separate ops, whose
    gradients are column sums that ATen splits over the columns, never over the rows."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y


class RMSNorm(nn.RMSNorm):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 and returned in the input's dtype.

    torch's ``nn.RMSNorm`` with its parameter names and init (weight = 1); only the forward differs: under bf16
    autocast the input is bf16 and the weight float32, which torch's fused kernel refuses (it falls back with a
    warning and reduces in bf16). LightningDiT's RMSNorm also normalises in float32."""

    def forward(self, x: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), self.normalized_shape, w, self.eps).to(x.dtype)


def make_norm(kind: str, dim: int, *, affine: bool, eps: float = 1e-6) -> nn.Module:
    """``layernorm`` or ``rmsnorm`` over the last ``dim`` features, with or without a learnable scale (and bias)."""
    if kind == "layernorm":
        return LayerNorm(dim, eps=eps, elementwise_affine=affine)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, elementwise_affine=affine)
    raise ValueError(f"unknown norm {kind!r}; norms: {', '.join(NORMS)}")


class TimeDependentParameter(nn.Module):
    """A per-element parameter that moves with a scalar time feature τ (DiMR, Liu et al. 2024, "Alleviating Distortion
    in Image Generation via Multi-Resolution Diffusion Models", §3.3 TD-LN; qihao067/DiMR ``TimeDependentParameter``):

        p(τ) = s ⊙ p0 + (1 − s) ⊙ p1,   s = sigmoid((1 + w) ⊙ τ + b)

    four numbers per element (p0 = p1 = ``init`` and w = b = 0 at the start, so p(τ) starts constant). ``forward(tau)``
    takes (B,) τ and returns (B, *shape)."""

    def __init__(self, shape: tuple[int, ...], init: float):
        super().__init__()
        self.p0 = nn.Parameter(torch.full(shape, float(init)))
        self.p1 = nn.Parameter(torch.full(shape, float(init)))
        self.w = nn.Parameter(torch.zeros(shape))  # the slope is 1 + w (the release keeps it out of weight decay)
        self.b = nn.Parameter(torch.zeros(shape))

    def forward(self, tau: Tensor) -> Tensor:
        tau = tau.view(-1, *([1] * self.p0.dim())).to(self.p0.dtype)
        s = torch.sigmoid((1 + self.w) * tau + self.b)
        return s * self.p0 + (1 - s) * self.p1


class TDNorm(nn.Module):
    """TD-LN: a LayerNorm (or RMSNorm) whose scale γ(τ) (and shift β(τ)) are ``TimeDependentParameter``s, a
    parameter-cheap replacement for adaLN's per-block modulation MLP (8 numbers per channel with a shift, 4 without).
    ``forward(x, tau)``: x (B, ..., dim), tau (B,) -> x normalised over the last axis, scaled and shifted per sample."""

    def __init__(self, kind: str, dim: int, *, bias: bool = True, eps: float = 1e-6):
        super().__init__()
        if kind not in NORMS:
            raise ValueError(f"unknown norm {kind!r}; norms: {', '.join(NORMS)}")
        self.kind, self.dim, self.eps = kind, dim, eps
        self.weight = TimeDependentParameter((dim,), 1.0)
        self.bias = TimeDependentParameter((dim,), 0.0) if bias else None

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        if self.kind == "layernorm":
            y = F.layer_norm(x.float(), (self.dim,), eps=self.eps)
        else:
            y = F.rms_norm(x.float(), (self.dim,), eps=self.eps)
        shape = (x.shape[0], *([1] * (x.dim() - 2)), self.dim)  # (B, 1, ..., dim)
        y = y * self.weight(tau).view(shape)
        if self.bias is not None:
            y = y + self.bias(tau).view(shape)
        return y.to(x.dtype)
