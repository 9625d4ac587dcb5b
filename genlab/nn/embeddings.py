"""Timestep, class-label and 2-D position embeddings (as in DiT, Peebles & Xie 2023)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0, freq_shift: float = 0.0) -> Tensor:
    """Sinusoidal features of (B,) scalars -> (B, dim) (Transformer / ADM frequency embedding): [cos, sin] of
    t exp(-ln(max_period) i / (half - freq_shift)); ``freq_shift`` is diffusers' ``downscale_freq_shift``
    (0 in DiT's code, 1 in diffusers' DiTTransformer2DModel)."""
    half = dim // 2
    div = half if not freq_shift else half - freq_shift
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / div)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> frequency features of ``t * time_scale`` -> MLP -> (B, hidden)."""

    def __init__(self, hidden: int, freq_dim: int = 256, time_scale: float = 1000.0, freq_shift: float = 0.0):
        super().__init__()
        self.freq_dim, self.time_scale, self.freq_shift = freq_dim, time_scale, freq_shift
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t * self.time_scale, self.freq_dim, freq_shift=self.freq_shift)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class ids -> (B, hidden); row ``num_classes`` is the null class used by classifier-free guidance."""

    def __init__(self, num_classes: int, hidden: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding_table(labels)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / DiT): (grid*grid, dim), rows in raster order."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    coords = torch.arange(grid, dtype=torch.float64)
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))

    def embed_1d(pos: Tensor) -> Tensor:  # (M,) -> (M, dim/2)
        out = pos[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([embed_1d(gx.reshape(-1)), embed_1d(gy.reshape(-1))], dim=1)  # (grid*grid, dim)
    return emb.float()


def relative_position_index(window: int) -> Tensor:
    """(w*w, w*w) long: the row of Swin's (2w-1)^2-entry relative position bias table (Liu et al. 2021, eq. 4's B)
    for each query/key pair of a w x w window, tokens in raster order."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1  # (w*w, w*w, 2), each in 0..2w-2
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]
