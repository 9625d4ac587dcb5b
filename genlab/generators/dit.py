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

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.nn import LabelEmbedder, TimestepEmbedder, rope_2d, rope_3d, sincos_pos_embed_2d
from genlab.nn.adaln import DiTBlock, FinalLayer, block_norm, modulate, swiglu_hidden  # noqa: F401  (re-exported)
from genlab.nn.embeddings import timestep_embedding
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

# name -> (depth, hidden_size, num_heads), DiT paper Table 4; presets imagenet256/dit-*-* spell these out
DIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}


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
        # 2: a second time input s, embedded like t and added to the conditioning (CTM's G(x_t, t, s)); objectives
        # that need it request it through ``backbone_overrides``. 1: DiT as published (no extra weights)
        time_inputs: int = 1
        # how t and y enter: adaLN-Zero (DiT), or DiMR's TD-LN (every norm's scale and shift a learned function of
        # tau = 1 - 2t, no modulation MLPs; t enters only there, y as a class token in front of the patches)
        conditioning: Literal["adaln", "tdln"] = "adaln"
        learn_sigma: bool = False  # 2 C output channels (DiT's learned variance); set by objective ddpm's overrides
        # time conventions of published checkpoints, converted here and nowhere else (see ``network_time``)
        time_scale: float = 1000.0  # the embedding sees time_scale * t: DiT's step index (1000 t); SiT/LightningDiT 1
        time_reversed: bool = False  # the network's time is 1 - t (SiT/LightningDiT: t = 1 is data, 0 noise)
        output_sign: Literal[1, -1] = 1  # -1: the network predicts -v (SiT/LightningDiT's data - noise velocity)
        time_freq_shift: float = 0.0  # the embedding's frequencies exp(-ln(1e4) i / (128 - shift)): diffusers' DiT 1
        patch_time: int = 1  # video latents (C, T, h, w): latent frames per patch (3-D patches pt x p x p)

        def validate(self) -> None:
            if min(self.depth, self.hidden_size, self.num_heads, self.patch_size, self.patch_time) <= 0:
                raise ValueError("depth, hidden_size, num_heads and patch_size must be positive")
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
            if self.time_inputs not in (1, 2):
                raise ValueError(f"time_inputs must be 1 or 2, got {self.time_inputs}")
            if self.output_sign not in (1, -1):
                raise ValueError(f"output_sign must be 1 or -1, got {self.output_sign}")
            if not (math.isfinite(self.time_scale) and self.time_scale > 0) or not math.isfinite(self.time_freq_shift):
                raise ValueError("time_scale must be a positive number and time_freq_shift a finite one")
            if self.rope and (self.hidden_size // self.num_heads) % 4:
                raise ValueError(
                    f"rope needs a head dimension (hidden_size / num_heads = {self.hidden_size // self.num_heads}) "
                    "divisible by 4: half of it for rows, half for columns, in pairs"
                )
            if self.conditioning == "tdln" and self.rope:
                raise ValueError("conditioning tdln puts a class token in front of the patches; rope does not cover it")

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
        out_channels = out_channels or in_channels * (2 if cfg.learn_sigma else 1)
        self.cfg, self.spec, self.in_channels, self.out_channels = cfg, spec, in_channels, out_channels
        input_size = h
        self.input_size, self.num_classes = input_size, num_classes
        self.grid = input_size // p
        self.frames = None if frames is None else frames // pt  # patches along time; None for images
        D = cfg.hidden_size
        if self.frames is None:
            self.x_embedder = nn.Conv2d(in_channels, D, kernel_size=p, stride=p)
        else:
            self.x_embedder = nn.Conv3d(in_channels, D, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.tdln = cfg.conditioning == "tdln"
        embed = {"time_scale": cfg.time_scale, "freq_shift": cfg.time_freq_shift}
        self.t_embedder = None if self.tdln else TimestepEmbedder(D, **embed)
        self.s_embedder = TimestepEmbedder(D, **embed) if cfg.time_inputs == 2 else None  # CTM's target time s
        self.y_embedder = LabelEmbedder(num_classes, D)
        self.register_buffer("pos_embed", self.position_embedding(D), persistent=False)
        rope = self.rope_table(D // cfg.num_heads) if cfg.rope else None  # (2, T, Dh) cos and sin
        self.register_buffer("rope", rope, persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, self.out_channels * pt, cfg.norm, tdln=self.tdln)
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
        if self.t_embedder is not None:
            nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if self.s_embedder is not None:  # zero output: with s added, the network starts as the one-time DiT
            nn.init.normal_(self.s_embedder.mlp[0].weight, std=0.02)
            nn.init.zeros_(self.s_embedder.mlp[2].weight)
        for block in [*self.blocks, self.final_layer] if not self.tdln else []:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def last_layer(self) -> Tensor:
        """The output projection's weight: where an adaptive loss weight (VQGAN's ratio of gradient norms; CTM's
        GAN weight) is measured."""
        return self.final_layer.linear.weight

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, H, W); video: (B, t*g*g, p*p*pt*C) -> (B, C, t*pt, H, W)."""
        B, p, g, C = x.shape[0], self.cfg.patch_size, self.grid, self.out_channels
        if self.frames is not None:
            t, pt = self.frames, self.cfg.patch_time
            x = x.view(B, t, g, g, p, p, pt, C).permute(0, 7, 1, 6, 2, 4, 3, 5)  # (B, C, t, pt, g, p, g, p)
            return x.reshape(B, C, t * pt, g * p, g * p)
        x = x.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)  # (B, C, g, p, g, p)
        return x.reshape(B, C, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor, s: Tensor | None = None) -> Tensor:
        """x (B, C, H, W), t (B,) in [0, 1], y (B,) class ids (``num_classes`` = null) -> (B, C, H, W).
        ``s`` (B,): the second time input of a ``time_inputs: 2`` backbone (default: s = t)."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, D)
        h = h + self.pos_embed.to(h.dtype)  # keep the residual stream in the compute dtype (bf16 under autocast)
        if self.tdln:
            return self.forward_tdln(h, t, y)
        c = self.t_embedder(self.network_time(t)) + self.y_embedder(y)  # (B, D)
        if self.s_embedder is not None:
            c = c + self.s_embedder(self.network_time(t if s is None else s))
        elif s is not None:
            raise ValueError("this DiT has one time input (time_inputs: 1); it takes no s")
        for block in self.blocks:
            h = block(h, c, self.rope)
        out = self.unpatchify(self.final_layer(h, c))
        return -out if self.cfg.output_sign == -1 else out

    def network_time(self, t: Tensor) -> Tensor:
        """genlab's t (t = 1 noise) as this network's time: 1 - t for SiT/LightningDiT checkpoints (the embedder
        then scales by ``time_scale``)."""
        return 1 - t if self.cfg.time_reversed else t

    def forward_tdln(self, h: Tensor, t: Tensor, y: Tensor) -> Tensor:
        """TD-LN conditioning: (B, T, D) patches behind the class token; every norm reads tau = 1 - 2t."""
        tau = 1 - 2 * t.float()
        h = torch.cat([self.y_embedder(y).unsqueeze(1).to(h.dtype), h], dim=1)  # (B, 1 + T, D)
        for block in self.blocks:
            h = block(h, tau)
        return self.unpatchify(self.final_layer(h[:, 1:], tau))


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
