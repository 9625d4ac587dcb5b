"""Rotary position embedding (RoPE, Su et al. 2021): 1-D over a sequence (Llama) and 2-D axial over a grid (the
EVA-02 / LightningDiT / LlamaGen vision variant).

Feature pairs (2i, 2i+1) of a head form a 2-D vector rotated by the angle pos * theta^(-2i/d), i = 0 .. d/2 - 1.
1-D: d = head_dim and pos is the token's index. 2-D: each head's features are split in two halves, the first rotated
by the token's row, the second by its column, each with d = head_dim / 2 (LightningDiT and LlamaGen: theta = 10000).
The score of a query at position p and a key at position p' then depends on p - p' only (per axis).
"""

from __future__ import annotations

import torch
from torch import Tensor

ROPE_THETA = 10000.0


def _angles(positions: Tensor, dim: int, theta: float) -> Tensor:
    """(len(positions), dim) float64 angles, the two features of each pair sharing one."""
    freqs = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    return (positions.double()[:, None] * freqs[None]).repeat_interleave(2, dim=1)


def rope_1d(head_dim: int, length: int, *, theta: float = ROPE_THETA) -> Tensor:
    """(2, length, head_dim) float32: the cos and sin of every feature's angle at positions 0 .. length - 1."""
    if head_dim % 2:
        raise ValueError(f"1-D RoPE needs an even head dimension, got {head_dim}")
    angle = _angles(torch.arange(length), head_dim, theta)  # (N, head_dim)
    return torch.stack([angle.cos(), angle.sin()]).float()


def rope_2d(head_dim: int, grid: int | tuple[int, int], *, theta: float = ROPE_THETA) -> Tensor:
    """(2, h*w, head_dim) float32 for a square ``grid`` side or an (h, w) grid, tokens in raster order."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    h, w = (grid, grid) if isinstance(grid, int) else grid
    half = head_dim // 2
    rows = _angles(torch.arange(h), half, theta)[:, None, :].expand(h, w, half)  # row angle of token (r, c)
    cols = _angles(torch.arange(w), half, theta)[None, :, :].expand(h, w, half)  # column angle of token (r, c)
    angle = torch.cat([rows, cols], dim=-1).reshape(h * w, head_dim)  # (N, head_dim)
    return torch.stack([angle.cos(), angle.sin()]).float()


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate (B, H, N, Dh) queries or keys by ``rope`` (2, N, Dh); float32 inside, ``x``'s dtype out."""
    cos, sin = rope[0], rope[1]
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))  # (B, H, N, Dh/2, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (x0, x1) -> (-x1, x0)
    return (xf * cos + rotated * sin).to(x.dtype)


def rope_3d(head_dim: int, grid: tuple[int, int, int], *, theta: float = ROPE_THETA) -> Tensor:
    """(2, t*h*w, head_dim) float32 for a (t, h, w) spatio-temporal grid, tokens time-major then raster order.
    Axial as ``rope_2d``: a quarter of each head's features (``head_dim // 4``) is rotated by the token's frame,
    the rest split evenly between its row and its column; needs ``head_dim`` divisible by 16 (even parts)."""
    if head_dim % 16:
        raise ValueError(f"3-D RoPE needs a head dimension divisible by 16, got {head_dim}")
    t, h, w = grid
    dt = head_dim // 4
    ds = (head_dim - dt) // 2
    times = _angles(torch.arange(t), dt, theta)[:, None, None, :].expand(t, h, w, dt)
    rows = _angles(torch.arange(h), ds, theta)[None, :, None, :].expand(t, h, w, ds)
    cols = _angles(torch.arange(w), ds, theta)[None, None, :, :].expand(t, h, w, ds)
    angle = torch.cat([times, rows, cols], dim=-1).reshape(t * h * w, head_dim)  # (N, head_dim)
    return torch.stack([angle.cos(), angle.sin()]).float()
