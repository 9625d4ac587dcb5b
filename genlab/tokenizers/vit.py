"""Pieces the 1-D transformer tokenizers share (TiTok, FlexTok): a pre-LN ViT block on genlab's Attention and Mlp,
the named ViT sizes, and patchify / unpatchify.

The block is CLIP's / TiTok's ``ResidualAttentionBlock``: x + attn(LN(x)), then x + mlp(LN(x)), LayerNorm eps 1e-5,
the exact GELU, MLP ratio 4, biases everywhere (so TiTok's released weights map onto it one tensor per tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from genlab.nn import Attention, Mlp
from genlab.nn.norms import LayerNorm

# TiTok's modules/blocks.py: width, layers, heads per named size
VIT_SIZES = {"small": (512, 8, 8), "base": (768, 12, 12), "large": (1024, 24, 16)}


@dataclass
class ViTConfig:
    width: int = 512  # model width D
    depth: int = 8  # transformer layers
    num_heads: int = 8  # attention heads (width must divide)
    mlp_ratio: float = 4.0  # MLP hidden = mlp_ratio * width

    def validate(self) -> None:
        if min(self.width, self.depth, self.num_heads) < 1 or self.width % self.num_heads:
            raise ValueError(f"a ViT needs positive sizes and width % num_heads == 0, got {self}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")


def vit_size(name: str) -> ViTConfig:
    """The named TiTok size (small, base, large) as a ViTConfig."""
    width, depth, heads = VIT_SIZES[name]
    return ViTConfig(width=width, depth=depth, num_heads=heads)


class ViTBlock(nn.Module):
    """Pre-LN transformer layer (CLIP / TiTok): x + attn(LN(x), mask), then x + mlp(LN(x)); x (B, T, D)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = LayerNorm(cfg.width)
        self.attn = Attention(cfg.width, cfg.num_heads)
        self.norm2 = LayerNorm(cfg.width)
        self.mlp = Mlp(cfg.width, int(cfg.width * cfg.mlp_ratio), approximate="none")

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """``depth`` ViT blocks between an input and an output LayerNorm (TiTok's ln_pre / ln_post)."""

    def __init__(self, cfg: ViTConfig, *, pre_norm: bool = True):
        super().__init__()
        self.ln_pre = LayerNorm(cfg.width) if pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.depth))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, T, D) -> (B, T, D)
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x, mask)
        return x


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C), patches in raster order, features (p1, p2, c) as TiTok's head."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p1, p2, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: Tensor, p: int, channels: int, grid: int) -> Tensor:
    """(B, grid*grid, p*p*C) -> (B, C, grid*p, grid*p), the inverse of ``patchify``."""
    B = x.shape[0]
    x = x.reshape(B, grid, grid, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p1, w, p2)
    return x.reshape(B, channels, grid * p, grid * p)
