"""Normalisation layers: LayerNorm (DiT) or RMSNorm (Zhang & Sennrich 2019; LightningDiT), chosen by name."""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

NormKind = Literal["layernorm", "rmsnorm"]
NORMS = ("layernorm", "rmsnorm")


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
        return nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps, elementwise_affine=affine)
    raise ValueError(f"unknown norm {kind!r}; norms: {', '.join(NORMS)}")
