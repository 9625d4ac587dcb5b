"""Normalisation layers: LayerNorm (DiT) or RMSNorm (Zhang & Sennrich 2019; LightningDiT), chosen by name."""

from __future__ import annotations

from typing import Literal

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
