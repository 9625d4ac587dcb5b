"""DiT: a transformer backbone with adaLN-Zero conditioning (Peebles & Xie, "Scalable Diffusion
Models with Transformers", 2023). A backbone only: ``f(x, t, y) -> output`` with t in [0, 1];
the objective (flow, diffusion, ...) decides what the output means.

Sizes from the paper's Table 4: S/B/L/XL with patch 2, 4 or 8 (``DIT_SIZES``).

LightningDiT (Yao et al. 2025, "Reconstruction vs. Generation", hustvl/LightningDiT) is this backbone with the
config switches ``mlp="swiglu"``, ``norm="rmsnorm"``, ``rope=True`` (and optionally ``qk_norm``, and
``adaln="scale_gate"`` for its ``wo_shift``); ``lightningdit_param_count`` counts its paper sizes. The defaults
are DiT's, so every DiT preset and parameter count is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.nn import (
    Attention,
    LabelEmbedder,
    Mlp,
    SwiGLU,
    TimestepEmbedder,
    make_norm,
    rope_2d,
    rope_3d,
    sincos_pos_embed_2d,
)
from genlab.nn.embeddings import timestep_embedding
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

# name -> (depth, hidden_size, num_heads), DiT paper Table 4; presets imagenet256/dit-*-* spell these out
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


def modulate(x: Tensor, shift: Tensor | None, scale: Tensor) -> Tensor:
    x = x * (1 + scale.unsqueeze(1))
    return x if shift is None else x + shift.unsqueeze(1)


def block_norm(kind: str, hidden: int) -> nn.Module:
    """The norm before each modulation: DiT's LayerNorm has no affine (adaLN supplies scale and shift);
    LightningDiT's RMSNorm keeps a learnable scale, so ``rmsnorm`` adds ``hidden`` parameters per norm."""
    return make_norm(kind, hidden, affine=kind == "rmsnorm", eps=1e-6)


def swiglu_hidden(hidden: int, mlp_ratio: float) -> int:
    """LightningDiT's SwiGLU width: int(2/3 * int(mlp_ratio * D)) (XL: 3072), so it costs about what the MLP does."""
    return int(2 / 3 * int(hidden * mlp_ratio))


class DiTBlock(nn.Module):
    """Self-attention + MLP, each branch modulated (shift, scale; or scale alone) and gated by the conditioning."""

    def __init__(self, hidden: int, num_heads: int, cfg: DiT.Config):
        super().__init__()
        self.norm1 = block_norm(cfg.norm, hidden)
        self.attn = Attention(hidden, num_heads, qk_norm=cfg.norm if cfg.qk_norm else None)
        self.norm2 = block_norm(cfg.norm, hidden)
        if cfg.mlp == "swiglu":
            self.mlp = SwiGLU(hidden, swiglu_hidden(hidden, cfg.mlp_ratio))
        else:
            self.mlp = Mlp(hidden, int(hidden * cfg.mlp_ratio))
        self.n_mod = 6 if cfg.adaln == "shift_scale_gate" else 4
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, self.n_mod * hidden))

    def forward(self, x: Tensor, c: Tensor, rope: Tensor | None = None) -> Tensor:  # x (B, T, D), c (B, D)
        mod = self.adaLN_modulation(c).chunk(self.n_mod, dim=1)  # each (B, D)
        if self.n_mod == 6:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        else:  # LightningDiT's wo_shift
            (scale_msa, gate_msa, scale_mlp, gate_mlp), shift_msa, shift_mlp = mod, None, None
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rope)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Norm, (shift, scale) modulation and the linear to patches; LightningDiT keeps the shift here in every case."""

    def __init__(self, hidden: int, patch_size: int, out_channels: int, norm: str = "layernorm"):
        super().__init__()
        self.norm_final = block_norm(norm, hidden)
        self.linear = nn.Linear(hidden, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, p*p*C)


@register("generator", "dit")
class DiT(nn.Module):
    """A backbone ``f(x, t, y)`` over continuous latents; an objective (``objective: flow``) is the generator."""

    ROLE = "backbone"
    TOKEN_KINDS = ("continuous",)
    TOKEN_AXES = (("channel", "time", "height", "width"),)  # video latents: spatio-temporal patches

    @dataclass
    class Config:
        depth: int = 6
        hidden_size: int = 256
        num_heads: int = 4
        patch_size: int = 4
        mlp_ratio: float = 4.0
        # LightningDiT's switches; the defaults are DiT's
        mlp: Literal["gelu", "swiglu"] = "gelu"  # feed-forward: tanh-GELU MLP, or SwiGLU of width swiglu_hidden()
        norm: Literal["layernorm", "rmsnorm"] = "layernorm"  # block norms (and the QK-norm's type)
        rope: bool = False  # 2-D axial RoPE on q and k, on top of the sin-cos absolute embedding
        qk_norm: bool = False  # normalise each head's q and k (LightningDiT's use_qknorm; off in its release)
        adaln: Literal["shift_scale_gate", "scale_gate"] = "shift_scale_gate"  # scale_gate: LightningDiT's wo_shift
        patch_time: int = 1  # video latents (C, T, h, w): latent frames per patch (3-D patches pt x p x p)

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads, self.patch_size, self.patch_time) <= 0:
                raise ValueError("depth, hidden_size, num_heads and patch_size must be positive")
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            if self.rope and (self.hidden_size // self.num_heads) % 4:
                raise ValueError(
                    f"rope needs a head dimension (hidden_size / num_heads = {self.hidden_size // self.num_heads}) "
                    "divisible by 4: half of it for rows, half for columns, in pairs"
                )

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, out_channels: int = 0):
        super().__init__()
        p, pt, frames = cfg.patch_size, cfg.patch_time, spec.size("time")
        in_channels, (h, w) = spec.channels, spec.grid
        if frames is None and pt != 1:
            raise ValueError(f"patch_time {pt} needs video latents (a time axis); these are {spec.describe()}")
        if frames is not None and frames % pt:
            raise ValueError(f"{frames} latent frames are not divisible by patch_time {pt}")
        if h != w:
            raise ValueError(f"DiT takes square latents, got {h}x{w}")
        if h % p:
            raise ValueError(f"input size {h} is not divisible by the patch size {p}; choose a patch that divides it")
        self.cfg, self.spec, self.in_channels, self.out_channels = cfg, spec, in_channels, out_channels or in_channels
        input_size = h
        self.input_size, self.num_classes = input_size, num_classes
        self.grid = input_size // p
        self.frames = None if frames is None else frames // pt  # patches along time; None for images
        D = cfg.hidden_size
        if self.frames is None:
            self.x_embedder = nn.Conv2d(in_channels, D, kernel_size=p, stride=p)
        else:
            self.x_embedder = nn.Conv3d(in_channels, D, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.t_embedder = TimestepEmbedder(D)
        self.y_embedder = LabelEmbedder(num_classes, D)
        self.register_buffer("pos_embed", self.position_embedding(D), persistent=False)
        rope = self.rope_table(D // cfg.num_heads) if cfg.rope else None  # (2, T, Dh) cos and sin
        self.register_buffer("rope", rope, persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, self.out_channels * pt, cfg.norm)
        self.initialize_weights()

    def position_embedding(self, D: int) -> Tensor:
        """(1, N, D) fixed sin-cos: DiT's 2-D one; for video the same per frame plus a 1-D sin-cos of the frame
        index (t scaled to DiT's positions: a whole-number frame index, frequency features as the timestep's)."""
        spatial = sincos_pos_embed_2d(D, self.grid)  # (g*g, D)
        if self.frames is None:
            return spatial.unsqueeze(0)
        temporal = timestep_embedding(torch.arange(self.frames, dtype=torch.float32), D)  # (t, D)
        return (temporal[:, None, :] + spatial[None]).reshape(1, -1, D)  # (1, t*g*g, D), time-major

    def rope_table(self, head_dim: int) -> Tensor:
        """2-D axial RoPE over the patch grid, or 3-D over (t, g, g) for video."""
        if self.frames is None:
            return rope_2d(head_dim, self.grid)
        return rope_3d(head_dim, (self.frames, self.grid, self.grid))

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
        """(B, T, p*p*C) -> (B, C, H, W); video: (B, t*g*g, p*p*pt*C) -> (B, C, t*pt, H, W)."""
        B, p, g, C = x.shape[0], self.cfg.patch_size, self.grid, self.out_channels
        if self.frames is not None:
            t, pt = self.frames, self.cfg.patch_time
            x = x.view(B, t, g, g, p, p, pt, C).permute(0, 7, 1, 6, 2, 4, 3, 5)  # (B, C, t, pt, g, p, g, p)
            return x.reshape(B, C, t * pt, g * p, g * p)
        x = x.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
        return x.reshape(B, C, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], y (B,) class ids (``num_classes`` = null) -> (B, C, H, W)."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, D)
        h = h + self.pos_embed.to(h.dtype)  # keep the residual stream in the compute dtype (bf16 under autocast)
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, D)
        for block in self.blocks:
            h = block(h, c, self.rope)
        return self.unpatchify(self.final_layer(h, c))


def dit_param_count(size: str, *, in_channels: int = 4, input_size: int = 32, num_classes: int = 1000) -> int:
    """Parameters of a paper-size DiT, counted on the meta device (no memory, instant)."""
    name, _, patch = size.partition("/")
    depth, hidden, heads = DIT_SIZES[name]
    cfg = DiT.Config(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch))
    with torch.device("meta"):
        model = DiT(cfg, spec=latent_spec(in_channels, input_size), num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())


def latent_spec(channels: int, size: int) -> TokenSpec:
    """The TokenSpec of a square continuous latent (C, size, size)."""
    return TokenSpec("continuous", (channels, size, size))


# name -> (depth, hidden_size, num_heads), LightningDiT's models/lightningdit.py (B, L, XL as DiT; 1p0B, 1p6B)
LIGHTNINGDIT_SIZES = {**DIT_SIZES, "1p0B": (24, 1536, 24), "1p6B": (28, 1792, 28)}
# the switches of LightningDiT's released configs (configs/lightningdit_xl_vavae_f16d32.yaml): use_swiglu,
# use_rmsnorm, use_rope on; use_qknorm and wo_shift off
LIGHTNINGDIT_SWITCHES = dict(mlp="swiglu", norm="rmsnorm", rope=True, qk_norm=False, adaln="shift_scale_gate")


def lightningdit_param_count(
    size: str, *, in_channels: int = 32, input_size: int = 16, num_classes: int = 1000, **switches
) -> int:
    """Parameters of a LightningDiT size (``"XL/1"``) on f16d32 latents, counted on the meta device."""
    name, _, patch = size.partition("/")
    depth, hidden, heads = LIGHTNINGDIT_SIZES[name]
    cfg = DiT.Config(
        depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(patch), **{**LIGHTNINGDIT_SWITCHES, **switches}
    )
    with torch.device("meta"):
        model = DiT(cfg, spec=latent_spec(in_channels, input_size), num_classes=num_classes)
    return sum(p.numel() for p in model.parameters())
