"""DiMR: a multi-resolution diffusion backbone with time-dependent LayerNorm (Liu et al. 2024, "Alleviating
Distortion in Image Generation via Multi-Resolution Diffusion Models", NeurIPS 2024; qihao067/DiMR).
A backbone ``f(x, t, y)`` like DiT; the objective decides what the output means.

Branches run from coarse to fine. The first sees the latent cut into ``patch_sizes[0]`` patches (e.g. 2: 16x16
tokens of a 32x32 latent) and runs Transformer blocks with a class token; the finer ones run ConvNeXt blocks (a
depthwise k x k conv, then the feed-forward) on finer grids (patch 1: every latent pixel). The **feature cascade**:
every branch concatenates its input and every block's output (``dim * (blocks + 1)`` channels), a TD-LN, a linear
to ``dim * r^2`` and a pixel shuffle by the resolution ratio r, a TD-LN, and adds the result to the next branch's
input. So the fine branch refines, at full resolution, what the coarse one decided; large patches no longer
leave their edges in the image. Inside a branch, blocks form a U-ViT-like sandwich: depth // 2 in, one middle,
depth // 2 out, each out-block fed ``Linear([x, skip])`` of the matching in-block.

Time enters only through **TD-LN** (``genlab.nn.TDNorm``): every norm's γ (and β) is a ``TimeDependentParameter``
of τ = 1 − 2t (t = 1 noise; the release feeds log-SNR / 4, also about [-1, 1]), 4 numbers per channel each, instead
of adaLN's modulation MLPs. The class enters as a token of the coarse branch.

genlab's objective owns the loss, so only the finest branch's prediction is returned; the release also supervises
the coarse branch's own (down-sampled) prediction with weight 1/4 (``loss_coeffs``), and its output head is not
built here (about 0.01% of the parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.generators.dit import latent_spec
from genlab.nn import Attention, LabelEmbedder, SwiGLU, TDNorm
from genlab.nn.conv import DepthwiseConv2d, MatmulConv2d
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec


class FeedForward(nn.Module):
    """TD-norm, then the GELU-gated feed-forward (``GELU(x W0) * x W1``, then W2; biases on)."""

    def __init__(self, dim: int, hidden: int, norm: str):
        super().__init__()
        self.norm = TDNorm(norm, dim, bias=norm == "layernorm")
        self.mlp = SwiGLU(dim, hidden, fused=False, act="gelu")

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        return self.mlp(self.norm(x, tau))


class TransformerBlock(nn.Module):
    """x + Attn(TDNorm(x)); x + FF(TDNorm(x)) on (B, 1 + T, D) tokens (the class token first)."""

    def __init__(self, dim: int, hidden: int, heads: int, norm: str):
        super().__init__()
        self.norm = TDNorm(norm, dim, bias=norm == "layernorm")
        self.attn = Attention(dim, heads, qkv_bias=False)
        self.ff = FeedForward(dim, hidden, norm)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        x = x + self.attn(self.norm(x, tau))
        return x + self.ff(x, tau)


class ConvNeXtBlock(nn.Module):
    """x + DWConv_k(x); x + FF(TDNorm(x)) on (B, H, W, D) maps (the release has no norm before the conv)."""

    def __init__(self, dim: int, hidden: int, kernel: int, norm: str):
        super().__init__()
        self.dwconv = DepthwiseConv2d(dim, kernel)
        self.ff = FeedForward(dim, hidden, norm)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        x = x + self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.ff(x, tau)


class Cascade(nn.Module):
    """Coarse features (B, h, w, C_low) -> (B, r h, r w, dim): TD-LN, linear to dim * r^2, pixel shuffle, TD-LN."""

    def __init__(self, low_dim: int, dim: int, ratio: int):
        super().__init__()
        self.ratio, self.dim = ratio, dim
        self.norm_in = TDNorm("layernorm", low_dim)
        self.kernel = nn.Linear(low_dim, dim * ratio * ratio)
        self.norm_out = TDNorm("layernorm", dim)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        B, h, w, _ = x.shape
        r = self.ratio
        x = self.kernel(self.norm_in(x, tau)).view(B, h, w, r, r, self.dim).permute(0, 1, 3, 2, 4, 5)
        return self.norm_out(x.reshape(B, h * r, w * r, self.dim), tau)


class Branch(nn.Module):
    """One resolution: patch embedding + learned position embedding (+ class token, + cascaded coarse features),
    a sandwich of blocks with long skips; returns the final map and the concatenated features for the next branch."""

    def __init__(self, i: int, cfg: DiMR.Config, in_channels: int, res: int, low: tuple[int, int] | None,
                 num_classes: int):  # fmt: skip
        super().__init__()
        dim, hidden, depth, p = cfg.dims[i], cfg.hidden_dims[i], cfg.depths[i], cfg.patch_sizes[i]
        self.transformer = i == 0
        self.input_layer = MatmulConv2d(in_channels, dim, p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, res, res, dim))
        self.class_embed = LabelEmbedder(num_classes, dim) if self.transformer else None
        self.cascade = Cascade(low[0], dim, res // low[1]) if low else None
        n = depth // 2 * 2 + 1

        def block():
            if self.transformer:
                return TransformerBlock(dim, hidden, cfg.num_heads, cfg.norm)
            return ConvNeXtBlock(dim, hidden, cfg.kernel_size, cfg.norm)

        self.blocks = nn.ModuleList(block() for _ in range(n))
        self.skip_denses = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(n // 2))
        self.out_dim = dim * (n + 1)  # input and every block's output, concatenated for the next branch

    def forward(self, x: Tensor, tau: Tensor, y: Tensor, low: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.input_layer(x).permute(0, 2, 3, 1) + self.pos_embed.to(x.dtype)  # (B, H, W, D)
        if low is not None:
            h = h + self.cascade(low, tau)
        B, H, W, D = h.shape
        if self.transformer:  # tokens, class token first
            h = torch.cat([self.class_embed(y).unsqueeze(1).to(h.dtype), h.reshape(B, H * W, D)], dim=1)
        feats, skips = [h], []
        n = len(self.blocks)
        for j, block in enumerate(self.blocks):
            if j > n // 2:
                h = self.skip_denses[j - n // 2 - 1](torch.cat([h, skips.pop()], dim=-1))
            h = block(h, tau)
            feats.append(h)
            if j < n // 2:
                skips.append(h)
        if self.transformer:  # drop the class token, back to maps
            feats = [f[:, 1:].reshape(B, H, W, D) for f in feats]
        return feats[-1], torch.cat(feats, dim=-1)


@register("generator", "dimr")
class DiMR(nn.Module):
    """A backbone ``f(x, t, y)`` over continuous latents; an objective (``objective: flow``) is the generator."""

    ROLE = "backbone"
    TOKEN_KINDS = ("continuous",)

    @dataclass
    class Config:
        dims: list[int] = field(default_factory=lambda: [128, 64])  # width of each branch, coarse to fine
        hidden_dims: list[int] = field(default_factory=lambda: [256, 128])  # feed-forward width of each branch
        depths: list[int] = field(default_factory=lambda: [6, 2])  # blocks per branch (odd: depth // 2 * 2 + 1 run)
        patch_sizes: list[int] = field(default_factory=lambda: [2, 1])  # each branch's patch; coarse = largest
        num_heads: int = 4  # attention heads of the Transformer branch
        kernel_size: int = 7  # depthwise conv of the ConvNeXt branches
        norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"  # the blocks' TD norm (the release: TD-RMSNorm, no shift)
        output_kernel: int = 3  # conv of the output head

        def validate(self) -> None:
            n = len(self.dims)
            if n < 1 or not (len(self.hidden_dims) == len(self.depths) == len(self.patch_sizes) == n):
                raise ValueError("dims, hidden_dims, depths and patch_sizes need one entry per branch")
            if min(self.dims + self.hidden_dims + self.depths + self.patch_sizes) <= 0:
                raise ValueError("every branch's dims, hidden_dims, depths and patch_sizes must be positive")
            if any(a % b or a <= b for a, b in zip(self.patch_sizes, self.patch_sizes[1:])):
                raise ValueError(f"patch_sizes must shrink by whole factors, coarse to fine: {self.patch_sizes}")
            if self.dims[0] % self.num_heads:
                raise ValueError(f"dims[0] {self.dims[0]} is not divisible by num_heads {self.num_heads}")
            if self.kernel_size % 2 == 0 or self.output_kernel % 2 == 0:
                raise ValueError("kernel_size and output_kernel must be odd (same padding)")

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, out_channels: int = 0):
        super().__init__()
        cfg.validate()
        C, (h, w) = spec.channels, spec.grid
        if h != w or h % cfg.patch_sizes[0]:
            raise ValueError(f"DiMR takes square latents divisible by the coarsest patch {cfg.patch_sizes[0]}, "
                             f"got {h}x{w}")  # fmt: skip
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        self.in_channels, self.out_channels = C, out_channels or C
        branches, low = [], None
        for i, p in enumerate(cfg.patch_sizes):
            branches.append(Branch(i, cfg, C, h // p, low, num_classes))
            low = (branches[-1].out_dim, h // p)
        self.branches = nn.ModuleList(branches)
        self.norm_out = TDNorm("layernorm", cfg.dims[-1])
        k, self.final_patch = cfg.output_kernel, cfg.patch_sizes[-1]  # a finest branch on patches: p x p per token
        self.conv_out = MatmulConv2d(cfg.dims[-1], self.out_channels * self.final_patch**2, k, padding=k // 2)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The release's init: truncated-normal(0.02) linears, convs and embeddings, zero biases."""
        if self.conv_out.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for b in self.branches:
            nn.init.trunc_normal_(b.pos_embed, std=0.02)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], y (B,) class ids (``num_classes`` = null) -> (B, C_out, H, W)."""
        tau = 1 - 2 * t.float()  # (B,): +1 at the data, -1 at pure noise
        h, low = None, None
        for branch in self.branches:
            h, low = branch(x, tau, y, low)
        out = self.conv_out(self.norm_out(h, tau).permute(0, 3, 1, 2))  # (B, C_out * p^2, H/p, W/p)
        p = self.final_patch
        if p > 1:
            out = nn.functional.pixel_shuffle(out, p)
        return out


# the released configs (configs/DiMR-{XL,G}-2R_imagenet256.py): two branches on 32x32x4 SD-VAE latents, a
# Transformer at patch 2 (16x16 tokens) and ConvNeXt blocks (kernel 7) at patch 1, TD-RMSNorm, 16 heads
DIMR_SIZES = {
    "XL/2R": dict(dims=[960, 480], hidden_dims=[1920, 960], depths=[39, 20], patch_sizes=[2, 1], num_heads=16),
    "G/2R": dict(dims=[1152, 576], hidden_dims=[2304, 1152], depths=[57, 29], patch_sizes=[2, 1], num_heads=16),
}


def dimr_param_count(size: str, *, in_channels: int = 4, input_size: int = 32, num_classes: int = 1000) -> int:
    """Parameters of a released DiMR size on SD-VAE latents, counted on the meta device."""
    with torch.device("meta"):
        model = DiMR(DiMR.Config(**DIMR_SIZES[size]), spec=latent_spec(in_channels, input_size),
                     num_classes=num_classes)  # fmt: skip
    return sum(p.numel() for p in model.parameters())
