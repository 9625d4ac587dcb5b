"""2-D axial rotary position embedding (RoPE, Su et al. 2021; the EVA-02 / LightningDiT vision variant).

Each head's features are split in two halves: the first half is rotated by the token's row, the second by its
column. Within a half of size d, feature pairs (2i, 2i+1) form a 2-D vector rotated by the angle
pos * theta^(-2i/d), i = 0 .. d/2 - 1 (LightningDiT: theta = 10000, d = head_dim / 2). The score of a query at
position p and a key at position p' then depends on p - p' only (per axis).
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_THETA = 10000.0


def rope_2d(head_dim: int, grid: int, *, theta: float = ROPE_THETA) -> Tensor:
    """(2, grid*grid, head_dim) float32: the cos and sin of every feature's angle, tokens in raster order."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    freqs = theta ** (-torch.arange(0, half, 2, dtype=torch.float64) / half)  # (half/2,)
    pos = torch.arange(grid, dtype=torch.float64)
    axis = (pos[:, None] * freqs[None]).repeat_interleave(2, dim=1)  # (grid, half): pairs share an angle
    rows = axis[:, None, :].expand(grid, grid, half)  # row angle of token (r, c)
    cols = axis[None, :, :].expand(grid, grid, half)  # column angle of token (r, c)
    angle = torch.cat([rows, cols], dim=-1).reshape(grid * grid, head_dim)  # (N, head_dim)
    return torch.stack([angle.cos(), angle.sin()]).float()


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate (B, H, N, Dh) queries or keys by ``rope`` (2, N, Dh); float32 inside, ``x``'s dtype out."""
    cos, sin = rope[0], rope[1]
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))  # (B, H, N, Dh/2, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (x0, x1) -> (-x1, x0)
    return (xf * cos + rotated * sin).to(x.dtype)
