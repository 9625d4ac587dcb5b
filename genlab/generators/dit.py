"""DiT: a transformer backbone with adaLN-Zero conditioning (Peebles & Xie, "Scalable Diffusion
Models with Transformers", 2023). A backbone only: ``f(x, t, y) -> output`` with t in [0, 1];
the objective (flow, diffusion, ...) decides what the output means.

Sizes from the paper's Table 4: S/B/L/XL with patch 2, 4 or 8 (``DIT_SIZES``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.nn import Attention, LabelEmbedder, Mlp, TimestepEmbedder, sincos_pos_embed_2d
from genlab.registry import register

# name -> (depth, hidden_size, num_heads), DiT paper Table 4; presets imagenet256/dit-*-* spell these out
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    """Self-attention + MLP, each branch modulated (shift, scale) and gated by the conditioning."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # x (B, T, D), c (B, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, p*p*C)


@register("generator", "dit")
class DiT(nn.Module):
    @dataclass
    class Config:
        depth: int = 6
        hidden_size: int = 256
        num_heads: int = 4
        patch_size: int = 4
        mlp_ratio: float = 4.0

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads, self.patch_size) <= 0:
                raise ValueError("depth, hidden_size, num_heads and patch_size must be positive")
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    def __init__(self, cfg: Config, *, in_channels: int, input_size: int, num_classes: int, out_channels: int = 0):
        super().__init__()
        p = cfg.patch_size
        if input_size % p:
            raise ValueError(
                f"input size {input_size} is not divisible by the patch size {p}; choose a patch that divides it"
            )
        self.cfg, self.in_channels, self.out_channels = cfg, in_channels, out_channels or in_channels
        self.input_size, self.num_classes = input_size, num_classes
        self.grid = input_size // p
        D = cfg.hidden_size
        self.x_embedder = nn.Conv2d(in_channels, D, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(num_classes, D)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, self.grid).unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init: Xavier linears, N(0, 0.02) embeddings, zero adaLN and output (adaLN-Zero)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in [*self.blocks, self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, H, W)."""
        B, p, g, C = x.shape[0], self.cfg.patch_size, self.grid, self.out_channels
        x = x.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
        return x.reshape(B, C, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], y (B,) class ids (``num_classes`` = null) -> (B, C, H, W)."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, D)
        h = h + self.pos_embed.to(h.dtype)  # keep the residual stream in the compute dtype (bf16 under autocast)
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            h = block(h, c)
        return self.unpatchify(self.final_layer(h, c))


def dit_param_count(size: str, *, in_channels: int = 4, input_size: int = 32, num_classes: int = 1000) -> int:
    """Parameters of a paper-size DiT, counted on the meta device (no memory, instant)."""
    name, _, patch = size.partition("/")
    depth, hidden, heads = DIT_SIZES[name]
    cfg = DiT.Config(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))
    with torch.device("meta"):
        model = DiT(cfg, in_channels=in_channels, input_size=input_size, num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
