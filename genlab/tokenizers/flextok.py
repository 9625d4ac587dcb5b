"""FlexTok: an image as a coarse-to-fine 1-D sequence of 1..K tokens, decoded by a rectified flow (Bachmann et al.
2025, "FlexTok: Resampling Images into 1D Token Sequences of Flexible Length"; apple/ml-flextok, which released
inference code only: the training here follows the paper's description and genlab's flow objective).

**Encoder.** Patches (``patch_size``) of the image, or of a frozen genlab VAE's latent (``vae``: a continuous
tokenizer section, e.g. ``{name: run, path: runs/my-vae}``; FlexTok uses an f8 VAE and 2x2 patches), with fixed
2-D sin-cos positions, then K learned *register tokens* appended; a pre-LN ViT in which patches see patches and
register i sees every patch and registers 0..i (``causal_registers``); the register outputs, LayerNorm, a linear
to len(levels) and **FSQ** (levels 8,8,8,5,5,5: 64,000 codes): tokens (B, K).

**Nested dropout** (training): per sample a keep count k (``nested_dropout``: ``uniform`` on 1..K, ``pow2``: a
power of two uniformly, ``uniform_pow2``: uniform rounded up to a power of two); registers k..K-1 are replaced by
one learned mask token, so the first registers carry the coarse content. With probability ``cond_dropout`` every
register is masked (k = 0): the unconditional model of classifier-free guidance.

**Decoder.** A rectified-flow transformer (DiT blocks with adaLN-Zero on the time, ``genlab.nn.adaln``)
over the noised target's patches followed by the K (masked) registers; it predicts the velocity at the patch
positions. Loss: genlab's flow convention (x_t = (1 - t) x0 + t eps, v = eps - x0, logit-normal t), optionally plus
REPA (Yu et al. 2025): decoder features at layer ``repa.depth`` projected to a frozen image encoder's patch
features, weight ``repa.weight`` times the negative cosine similarity (off by default).

**Decoding** ``decode(tokens[:, :k], seeds)`` for any k in 1..K: the missing registers are mask tokens, noise of
sample i is drawn from seed i, and a genlab sampler integrates from t = 1 to 0 (``decode_steps``, guidance
``decode_cfg`` against the all-masked registers); deterministic given the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import component_from_dict, to_dict
from genlab.nn import TimestepEmbedder, per_sample_rand, per_sample_randn, sincos_pos_embed_2d
from genlab.nn.adaln import DiTBlock, FinalLayer
from genlab.nn.conv import Conv2d
from genlab.nn.norms import LayerNorm
from genlab.registry import register
from genlab.samplers import guided, integrate
from genlab.samplers.schedules import shift_time
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.encoders import Frozen
from genlab.tokenizers.vit import ViT, ViTConfig

NOISE, TIME, DROP, KEEP = 0, 1, 2, 3  # per-sample random streams (NOISE and TIME as the flow objective's)
DROPOUTS = ("uniform", "pow2", "uniform_pow2", "none")


def keep_counts(u: Tensor, K: int, mode: str) -> Tensor:
    """Nested dropout's keep count k in 1..K (B,) from uniforms u (B,) in [0, 1)."""
    if mode == "none":
        return torch.full_like(u, K, dtype=torch.long)
    if mode == "pow2":  # 1, 2, 4, ..., K (and K itself when it is not a power of two), uniformly
        powers = torch.tensor(sorted({min(2**i, K) for i in range(math.ceil(math.log2(K)) + 1)}), device=u.device)
        return powers[(u * len(powers)).long().clamp_max(len(powers) - 1)]
    k = (u * K).long().clamp_max(K - 1) + 1  # uniform on 1..K
    if mode == "uniform_pow2":
        k = (2 ** torch.ceil(torch.log2(k.double()))).long().clamp_max(K)
    return k


def sample_t(times: FlowTimes, seeds: Tensor, device) -> Tensor:
    """Training times (B,) from per-sample seeds by the flow objective's rule (``RectifiedFlow.sample_t``, same
    stream): uniform, or logit-normal t = sigmoid(m + s n), then shifted towards noise."""
    u = per_sample_rand(seeds, stream=TIME, device=device)  # (B,)
    t = u
    if times.time_sampling == "logit_normal":
        t = torch.sigmoid(times.logit_mean + times.logit_std * torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6)))
    return t if times.time_shift == 1.0 else shift_time(t, times.time_shift)


@dataclass
class FlowDecoderConfig:
    """The decoder's DiT blocks (the fields ``genlab.nn.adaln.DiTBlock`` reads, with DiT's defaults)."""

    depth: int = 12  # DiT blocks
    hidden_size: int = 768  # width
    num_heads: int = 12
    patch_size: int = 2  # patches of the noised target
    mlp_ratio: float = 4.0
    mlp: Literal["gelu", "swiglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    qk_norm: bool = False
    adaln: Literal["shift_scale_gate", "scale_gate"] = "shift_scale_gate"

    def validate(self) -> None:
        if min(self.depth, self.hidden_size, self.num_heads, self.patch_size) < 1:
            raise ValueError("decoder depth, hidden_size, num_heads and patch_size must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"decoder hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")


@dataclass
class FlowTimes:
    """How training draws t (the fields of the flow objective's config that ``RectifiedFlow.sample_t`` reads)."""

    time_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    logit_mean: float = 0.0  # logit-normal location
    logit_std: float = 1.0  # logit-normal scale
    time_shift: float = 1.0  # t' = s t / (1 + (s - 1) t); 1 = off


@dataclass
class REPAConfig:
    weight: float = 0.0  # weight of the alignment loss; 0: off (FlexTok trains with REPA on DINOv2-L)
    depth: int = 1  # decoder layer whose patch features are aligned (after this many blocks)
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "dinov2"})  # a registered image_encoder

    def validate(self) -> None:
        if self.weight < 0 or self.depth < 1:
            raise ValueError("repa.weight must be >= 0 and repa.depth >= 1")


class FlexTokEncoder(nn.Module):
    """Patches + K registers -> ViT (causal over registers) -> register outputs -> (B, K, len(levels))."""

    def __init__(self, cfg: ViTConfig, *, in_channels: int, patch: int, grid: int, registers: int, code_dim: int,
                 causal: bool):  # fmt: skip
        super().__init__()
        D, T, K = cfg.width, grid * grid, registers
        self.patch_embed = Conv2d(in_channels, D, patch, stride=patch)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, grid).unsqueeze(0), persistent=False)
        self.registers = nn.Parameter(0.02 * torch.randn(K, D))
        self.transformer = ViT(cfg)
        self.ln_post = LayerNorm(D)
        self.proj = nn.Linear(D, code_dim)
        mask = torch.ones(T + K, T + K, dtype=torch.bool)
        if causal:  # patches see patches; register i sees every patch and registers 0..i
            mask[:T, T:] = False
            mask[T:, T:] = torch.ones(K, K, dtype=torch.bool).tril()
        self.register_buffer("mask", mask if causal else None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, D)
        regs = self.registers.unsqueeze(0).expand(h.shape[0], -1, -1).to(h.dtype)
        h = self.transformer(torch.cat([h, regs], dim=1), self.mask)  # (B, T + K, D)
        return self.proj(self.ln_post(h[:, -self.registers.shape[0] :]))  # (B, K, code_dim)


class FlexTokDecoder(nn.Module):
    """The velocity network f(x_t, t, registers): DiT blocks over [patches of x_t, registers (B, K, D)]."""

    def __init__(self, cfg: FlowDecoderConfig, *, channels: int, grid: int, registers: int, code_dim: int,
                 pooled: bool = False):  # fmt: skip
        super().__init__()

        D, p = cfg.hidden_size, cfg.patch_size
        self.grid, self.patch, self.channels = grid, p, channels
        self.x_embedder = Conv2d(channels, D, p, stride=p)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(D, grid).unsqueeze(0), persistent=False)
        self.t_embedder = TimestepEmbedder(D)
        self.register_embed = nn.Linear(code_dim, D)
        self.register_pos = nn.Parameter(0.02 * torch.randn(registers, D))
        self.mask_token = nn.Parameter(0.02 * torch.randn(D))
        self.pool = nn.Linear(D, D) if pooled else None  # the registers' mean added to the time conditioning
        self.blocks = nn.ModuleList(DiTBlock(D, cfg.num_heads, cfg) for _ in range(cfg.depth))
        self.final_layer = FinalLayer(D, p, channels, cfg.norm)
        for m in self.modules():  # DiT's init: Xavier linears; adaLN and the output zero (adaLN-Zero)
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for block in [*self.blocks, self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def registers(self, codes: Tensor, keep: Tensor) -> Tensor:
        """Codes (B, K, code_dim) and keep counts (B,) -> register inputs (B, K, D): mask token from position k."""
        K = codes.shape[1]
        r = self.register_embed(codes)
        kept = torch.arange(K, device=codes.device)[None, :] < keep[:, None]  # (B, K)
        r = torch.where(kept[..., None], r, self.mask_token.to(r.dtype))
        return r + self.register_pos.to(r.dtype)

    def forward(self, x: Tensor, t: Tensor, regs: Tensor, *, features_at: int = 0):
        """x_t (B, C, H, W), t (B,), registers (B, K, D) -> velocity (B, C, H, W) (and the patch features after
        ``features_at`` blocks, (B, T, D), when it is > 0)."""
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)  # (B, T, D)
        T, c = h.shape[1], self.t_embedder(t)
        if self.pool is not None:
            c = c + self.pool(regs.mean(1).to(c.dtype))
        h, feats = torch.cat([h, regs.to(h.dtype)], dim=1), None
        for i, block in enumerate(self.blocks, 1):
            h = block(h, c)
            if i == features_at:
                feats = h[:, :T]
        out = self.final_layer(h[:, :T], c)  # (B, T, p*p*C)
        B, g, p, C = x.shape[0], self.grid, self.patch, self.channels
        v = out.view(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, g * p, g * p)
        return (v, feats) if features_at else v


class REPALoss(nn.Module):
    """REPA: -cos(MLP(decoder features), frozen encoder features) at each patch, averaged. The encoder is held
    outside the module tree; the projector trains and is not part of the tokenizer's weights."""

    def __init__(self, cfg: REPAConfig, width: int):
        super().__init__()
        spec = dict(cfg.encoder)
        path = spec.get("path")
        if path is not None and path and not Path(path).exists():
            raise TokenizerError(
                f"tokenizer.repa.encoder.path={path!r} does not exist; set it or tokenizer.repa.weight=0"
            )
        try:
            enc = component_from_dict("image_encoder", spec, "tokenizer.repa.encoder").build()
        except TokenizerError as e:
            raise TokenizerError(f"REPA (tokenizer.repa.weight > 0) needs its image encoder: {e}") from None
        self.encoder = Frozen(enc)
        self.proj = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, enc.dim))

    def forward(self, feats: Tensor, images: Tensor, grid: int) -> Tensor:
        with torch.no_grad():
            f = self.encoder(images).float()  # (B, E, h', w')
            if tuple(f.shape[-2:]) != (grid, grid):
                f = F.interpolate(f, size=(grid, grid), mode="bilinear", align_corners=False)
        z = self.proj(feats).float()  # (B, T, E)
        return -F.cosine_similarity(z, f.flatten(2).transpose(1, 2), dim=-1).mean()


@register("tokenizer", "flextok")
class FlexTokTokenizer(Tokenizer):
    LOG_KEYS = ("flow", "range", "repa", "keep")

    @dataclass
    class Config:
        vae: dict[str, Any] = field(default_factory=dict)  # a frozen continuous tokenizer section; {}: pixels
        patch_size: int = 2  # encoder patches of the (VAE latent or image); the decoder's is decoder.patch_size
        num_registers: int = 256  # K, the longest token sequence
        encoder: ViTConfig = field(default_factory=lambda: ViTConfig(width=768, depth=12, num_heads=12))
        decoder: FlowDecoderConfig = field(default_factory=FlowDecoderConfig)  # the rectified-flow DiT
        levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # FSQ levels (64,000 codes)
        causal_registers: bool = True  # register i attends to registers 0..i only (in the encoder)
        nested_dropout: Literal[DROPOUTS] = "pow2"  # keep-count distribution (module docstring)
        cond_dropout: float = 0.1  # probability that every register is masked (unconditional, for guidance)
        range_weight: float = 1.0  # weight of mean(relu(|z| - 1)^2) on FSQ's inputs (genlab's; 0: off, as FlexTok)
        pooled_cond: bool = False  # also add the registers' mean to the decoder's adaLN input (genlab's; FlexTok: no)
        flow: FlowTimes = field(default_factory=FlowTimes)  # training's time sampling
        repa: REPAConfig = field(default_factory=REPAConfig)  # optional alignment of decoder features
        decode_steps: int = 25  # sampler steps of decode() (FlexTok: 20-25)
        decode_cfg: float = 1.0  # guidance scale of decode() against the all-masked registers (FlexTok: 7.5)
        decode_sampler: str = "euler"  # a registered continuous sampler

        def validate(self) -> None:
            self.encoder.validate()
            self.decoder.validate()
            self.repa.validate()
            if self.vae:
                self.vae = to_dict(component_from_dict("tokenizer", dict(self.vae), "tokenizer.vae"))
            if self.num_registers < 1 or self.patch_size < 1 or self.decode_steps < 1:
                raise ValueError("num_registers, patch_size and decode_steps must be positive")
            if not 0 <= self.cond_dropout < 1 or self.decode_cfg < 0 or self.range_weight < 0:
                raise ValueError("cond_dropout must be in [0, 1), decode_cfg and range_weight >= 0")
            if not self.levels or min(self.levels) < 2:
                raise ValueError("levels must be FSQ levels >= 2")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.vae = self._build_vae(resolution) if cfg.vae else None
        C, side = (3, resolution) if self.vae is None else (self.vae.token_spec.shape[0], self.vae.token_spec.shape[1])
        self.latent_shape = (C, side, side)
        for p in (cfg.patch_size, cfg.decoder.patch_size):
            if side % p:
                raise TokenizerError(f"the {side}x{side} target is not divisible into {p}x{p} patches")
        K, n = cfg.num_registers, len(cfg.levels)
        self.encoder = FlexTokEncoder(cfg.encoder, in_channels=C, patch=cfg.patch_size, grid=side // cfg.patch_size,
                                      registers=K, code_dim=n, causal=cfg.causal_registers)  # fmt: skip
        self.quantizer = component_from_dict("quantizer", {"name": "fsq", "levels": list(cfg.levels)}, "fsq").build(
            dim=n
        )
        self.decoder = FlexTokDecoder(cfg.decoder, channels=C, grid=side // cfg.decoder.patch_size, registers=K,
                                      code_dim=n, pooled=cfg.pooled_cond)  # fmt: skip
        self.token_spec = TokenSpec("discrete", (K,), vocab_size=self.quantizer.codebook_size, code_dim=n,
                                    variable_length=True, stochastic_decoder=True)  # fmt: skip

    def _build_vae(self, resolution: int) -> Tokenizer:
        vae = component_from_dict("tokenizer", dict(self.cfg.vae), "tokenizer.vae").build(resolution=resolution)
        if vae.token_spec.kind != "continuous":
            raise TokenizerError(f"tokenizer.vae must be a continuous tokenizer, got {vae.token_spec.describe()}")
        return vae.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FlexTokTokenizer:
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()
        return self

    # -- tokens

    def target(self, images: Tensor) -> Tensor:
        """What the flow models: the images, or the frozen VAE's latents (B, C, h, w)."""
        if self.vae is None:
            return images
        with torch.no_grad():
            return self.vae.encode(images)

    def quantize(self, images: Tensor):
        """Images -> (target latent, Quantized with codes (B, n, 1, K) and indices (B, 1, K), and its ``loss``:
        the range penalty mean(relu(|z| - 1)^2), which keeps FSQ's tanh out of saturation)."""
        x0 = self.target(images)
        z = self.encoder(x0)  # (B, K, n)
        q = self.quantizer(z.transpose(1, 2).unsqueeze(2))
        q.loss = F.relu(z.abs() - 1).pow(2).mean()
        return x0, q

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> token ids (B, K), coarse to fine: any prefix decodes."""
        return self.quantize(images)[1].indices.flatten(1)

    def indices_to_codes(self, tokens: Tensor) -> Tensor:
        """Ids (B, k) -> FSQ code vectors (B, len(levels), k)."""
        return self.quantizer.indices_to_codes(tokens[:, None, :]).squeeze(2)

    def register_inputs(self, tokens: Tensor) -> Tensor:
        """Ids of a prefix (B, k), 1 <= k <= K -> the decoder's K register inputs (B, K, D)."""
        B, k = tokens.shape
        K = self.cfg.num_registers
        if not 1 <= k <= K:
            raise TokenizerError(f"expected 1..{K} tokens per image, got {k}")
        codes = torch.zeros(B, K, len(self.cfg.levels), device=tokens.device)
        codes[:, :k] = self.indices_to_codes(tokens).transpose(1, 2)
        return self.decoder.registers(codes, torch.full((B,), k, device=tokens.device))

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None, *, steps: int | None = None,
               cfg: float | None = None, sampler: str | None = None) -> Tensor:  # fmt: skip
        """Ids of any prefix (B, k) -> images in [-1, 1]; sample i's noise from ``seeds[i]`` (default: i)."""
        B = tokens.shape[0]
        seeds = torch.arange(B) if seeds is None else seeds
        regs = self.register_inputs(tokens)  # (B, K, D)
        none_kept = torch.zeros(B, dtype=torch.long, device=tokens.device)
        empty = self.decoder.registers(regs.new_zeros(B, regs.shape[1], len(self.cfg.levels)), none_kept)

        def net(x: Tensor, t: Tensor, drop: Tensor) -> Tensor:  # drop (B',): 1 = the unconditional pass
            r = regs if len(x) == B else torch.cat([regs, regs])
            e = empty if len(x) == B else torch.cat([empty, empty])
            return self.decoder(x, t, torch.where(drop.view(-1, 1, 1).bool(), e, r))

        scale = self.cfg.decode_cfg if cfg is None else cfg
        velocity = guided(net, torch.zeros(B, dtype=torch.long, device=tokens.device), 1, scale)
        noise = per_sample_randn(seeds, self.latent_shape, stream=NOISE, device=tokens.device)
        res = integrate(sampler or self.cfg.decode_sampler, velocity, noise, steps=steps or self.cfg.decode_steps)
        return res.x if self.vae is None else self.vae.decode(res.x)

    # -- training

    def training_losses(self) -> nn.Module | None:
        if self.cfg.repa.weight == 0:
            return None
        return REPALoss(self.cfg.repa, self.cfg.decoder.hidden_size)

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """Flow matching on the target, conditioned on nested-dropped registers (+ REPA); per-sample randomness."""
        images = batch["image"]
        B, dev = images.shape[0], images.device
        seeds = batch.get("seed", torch.arange(B))
        x0, q = self.quantize(images)
        codes = q.codes.squeeze(2).transpose(1, 2)  # (B, K, n)
        keep = keep_counts(per_sample_rand(seeds, stream=KEEP, device=dev), self.cfg.num_registers,
                           self.cfg.nested_dropout)  # fmt: skip
        drop = per_sample_rand(seeds, stream=DROP, device=dev) < self.cfg.cond_dropout
        keep = torch.where(drop, torch.zeros_like(keep), keep)
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=dev, dtype=x0.dtype)
        t = sample_t(self.cfg.flow, seeds, dev)  # (B,)
        tb = t.view(B, 1, 1, 1).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * eps
        depth = self.cfg.repa.depth if losses is not None else 0
        out = self.decoder(x_t, t, self.decoder.registers(codes, keep), features_at=depth)
        v, feats = out if depth else (out, None)
        flow = (v.float() - (eps - x0).float()).pow(2).mean()  # the flow objective's velocity loss
        loss = flow + self.cfg.range_weight * q.loss
        logs = {"flow": flow.detach(), "range": q.loss.detach(), "keep": keep.float().mean(), **q.stats}
        if feats is None:
            return {"loss": loss, **logs}
        repa = losses(feats, images, self.decoder.grid)
        return {"loss": loss + self.cfg.repa.weight * repa, "repa": repa.detach(), **logs}

    @torch.no_grad()
    def roundtrip(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))
