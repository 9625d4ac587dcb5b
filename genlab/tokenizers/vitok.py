"""ViTok: "Learnings from Scaling Visual Tokenizers for Reconstruction and Generation" (Hansen-Estruch et al.,
ICML 2025). An asymmetric ViT autoencoder of Llama blocks (RMSNorm, SwiGLU, RoPE): a small encoder, a larger
decoder, a patch (image) or tubelet (video) embedding and a continuous KL bottleneck of C channels per token, so
the latent holds E = tokens x C floats (the paper's main knob: rFID tracks E).

- encoder: tubelet embedding (a Conv3d of kernel = stride = (tubelet, patch, patch); a Conv2d-equivalent for
  images) -> ``encoder.depth`` Llama blocks with axial RoPE (2-D, or 3-D over (t, h, w)) -> RMSNorm -> a linear to
  the posterior's mean and log-variance (2C per token);
- decoder: a linear C -> width -> ``decoder.depth`` Llama blocks -> RMSNorm -> a linear to each token's pixels.

Tokens: images (``frames: 1``) give ``(C, h, w)`` (every continuous generator models them); clips give
``(C, t, h, w)`` (axes channel, time, height, width), t = frames / tubelet. Clips are (B, 3, T, H, W) in the
``image`` key (``genlab.data.moving_openmoji``). Losses: the shared ``TokenizerCriterion`` (L1/L2, perceptual,
GAN) on frames folded into the batch, + kl_weight * KL on the KL-VAE's scale (``vae.py``); latent statistics are
weights, fitted at export, exactly as the KL-VAE's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.nn import Attention, RMSNorm, SwiGLU, rope_2d, rope_3d
from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.losses import LossConfig, TokenizerCriterion
from genlab.tokenizers.vae import DiagonalGaussian, FittedLatentStats

# ViT widths of the paper's variant names (depth, width, heads), as ViT / the paper's Table 1 name them:
# S, B, L are ViT's (Dosovitskiy et al. 2021); the paper's "Ld" decoder and exact depths are (paper, unverified)
VIT_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16)}
# the paper's named tokenizers: encoder size - decoder size / patch (tubelet for video), (paper, unverified)
VITOK_VARIANTS = {"S-B/16": ("S", "B", 16), "S-L/16": ("S", "L", 16), "S-B/8": ("S", "B", 8)}


@dataclass
class ViTConfig:
    depth: int = 2  # Llama blocks
    width: int = 64  # hidden size
    num_heads: int = 4  # attention heads (head dim = width / num_heads; 3-D RoPE needs it divisible by 16)
    mlp_ratio: float = 8 / 3  # SwiGLU hidden = mlp_ratio * width (Llama's 2/3 * 4)

    def validate(self, where: str = "vit") -> None:
        if min(self.depth, self.width, self.num_heads) < 1 or self.width % self.num_heads:
            raise ValueError(f"{where}: depth, width, num_heads must be positive and width divisible by num_heads")


class LlamaBlock(nn.Module):
    """x + Attn(RMSNorm(x), rope); x + SwiGLU(RMSNorm(x)); no biases (Llama)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.width, eps=1e-6)
        self.attn = Attention(cfg.width, cfg.num_heads, qkv_bias=False)
        self.norm2 = RMSNorm(cfg.width, eps=1e-6)
        self.mlp = SwiGLU(cfg.width, int(cfg.mlp_ratio * cfg.width), bias=False, fused=False)

    def forward(self, x: Tensor, rope: Tensor) -> Tensor:  # x (B, N, D)
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Blocks then a final RMSNorm, over tokens (B, N, D)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.blocks = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.width, eps=1e-6)

    def forward(self, x: Tensor, rope: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)


@register("tokenizer", "vitok")
class ViTokTokenizer(FittedLatentStats, Tokenizer):
    LOG_KEYS = ("kl",)

    @dataclass
    class Config:
        frames: int = 1  # T frames per input: 1 = images (B, 3, H, W); > 1 = clips (B, 3, T, H, W)
        patch: int = 4  # spatial patch side p
        tubelet: int = 1  # temporal patch (frames per token); must divide frames
        channels: int = 8  # C latent channels per token: E = (T/tubelet)(H/p)(W/p) C
        encoder: ViTConfig = field(default_factory=ViTConfig)  # small (ViTok: encoder scale buys nothing)
        decoder: ViTConfig = field(default_factory=lambda: ViTConfig(depth=3, width=96, num_heads=6))  # larger
        kl_weight: float = 1e-6  # KL weight on the KL-VAE's scale (per-sample KL sum / pixels)
        normalize: Literal["channel", "none"] = "channel"  # latent statistics per channel (fitted), or none
        stats_images: int = 256  # training clips the statistics are fitted on at export
        loss: LossConfig = field(default_factory=LossConfig)  # rec (L1/L2), perceptual, GAN, on frames

        def validate(self) -> None:
            if min(self.frames, self.patch, self.tubelet, self.channels, self.stats_images) < 1:
                raise ValueError("frames, patch, tubelet, channels and stats_images must be positive")
            if self.frames % self.tubelet:
                raise ValueError(f"tubelet {self.tubelet} does not divide frames {self.frames}")
            if self.kl_weight < 0:
                raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
            self.encoder.validate("encoder")
            self.decoder.validate("decoder")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, pt, C = cfg.patch, cfg.tubelet, cfg.channels
        if resolution % p:
            raise TokenizerError(f"resolution {resolution} is not a multiple of the patch {p}")
        self.resolution = resolution
        self.grid3 = (cfg.frames // pt, resolution // p, resolution // p)  # (t, h, w) tokens
        We, Wd = cfg.encoder.width, cfg.decoder.width
        self.embed = nn.Conv3d(3, We, kernel_size=(pt, p, p), stride=(pt, p, p))
        self.encoder = ViT(cfg.encoder)
        self.to_moments = nn.Linear(We, 2 * C)
        self.from_latent = nn.Linear(C, Wd)
        self.decoder = ViT(cfg.decoder)
        self.to_pixels = nn.Linear(Wd, 3 * pt * p * p)
        for name, vit in (("enc_rope", cfg.encoder), ("dec_rope", cfg.decoder)):
            self.register_buffer(name, self._rope(vit.width // vit.num_heads), persistent=False)
        self.register_buffer("latent_mean", torch.zeros(C))
        self.register_buffer("latent_std", torch.ones(C))
        self.register_buffer("latent_stats_fitted", torch.tensor(False))
        t, h, w = self.grid3
        self.token_spec = (
            TokenSpec("continuous", (C, h, w)) if cfg.frames == 1 else TokenSpec("continuous", (C, t, h, w))
        )

    def _rope(self, head_dim: int) -> Tensor:
        t, h, w = self.grid3
        if t == 1:
            return rope_2d(head_dim, (h, w))
        return rope_3d(head_dim, self.grid3)

    # -- the autoencoder; latents are (B, C, t, h, w) inside, the token layout outside

    def _clips(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) or clips (B, 3, T, H, W) -> clips, checked against the config."""
        x = x.unsqueeze(2) if x.ndim == 4 else x
        want = (3, self.cfg.frames, self.resolution, self.resolution)
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            raise TokenizerError(f"vitok takes inputs of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        return x

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """Moments (B, 2C, t, h, w) of q(z | x)."""
        t, h, w = self.grid3
        tokens = self.embed(self._clips(x)).flatten(2).transpose(1, 2)  # (B, N, We), N = t*h*w time-major
        moments = self.to_moments(self.encoder(tokens, self.enc_rope))  # (B, N, 2C)
        return DiagonalGaussian(moments.transpose(1, 2).unflatten(2, (t, h, w)))

    def decode_latent(self, z: Tensor) -> Tensor:
        """Raw latents (B, C, t, h, w) -> images (B, 3, H, W) or clips (B, 3, T, H, W)."""
        B, (t, h, w), p, pt = z.shape[0], self.grid3, self.cfg.patch, self.cfg.tubelet
        x = self.decoder(self.from_latent(z.flatten(2).transpose(1, 2)), self.dec_rope)  # (B, N, Wd)
        x = self.to_pixels(x).view(B, t, h, w, 3, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, 3, t, pt, h, p, w, p)
        x = x.reshape(B, 3, t * pt, h * p, w * p)
        return x[:, :, 0] if self.cfg.frames == 1 else x

    def _to_tokens(self, z: Tensor) -> Tensor:  # (B, C, t, h, w) -> the token layout
        return z[:, :, 0] if self.cfg.frames == 1 else z

    def _from_tokens(self, tokens: Tensor) -> Tensor:
        return tokens.unsqueeze(2) if self.cfg.frames == 1 else tokens

    # -- latent statistics (as the KL-VAE's: weights, fitted at export; FittedLatentStats)

    def _stat_view(self, v: Tensor) -> Tensor:
        return v.view(1, -1, 1, 1, 1)

    # -- the Tokenizer contract

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images or clips -> normalised posterior means in the token layout."""
        self._require_stats("encode")
        z = self.posterior(images).mean
        if self.cfg.normalize != "none":
            z = (z - self._stat_view(self.latent_mean)) / self._stat_view(self.latent_std)
        return self._to_tokens(z)

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        """Normalised tokens -> images (B, 3, H, W) or clips (B, 3, T, H, W) in [-1, 1] (deterministic)."""
        self._require_stats("decode")
        z = self._from_tokens(tokens)
        if self.cfg.normalize != "none":
            z = z * self._stat_view(self.latent_std) + self._stat_view(self.latent_mean)
        return self.decode_latent(z)

    def last_layer(self) -> Tensor:
        return self.to_pixels.weight

    def training_losses(self) -> nn.Module:
        return TokenizerCriterion(self.cfg.loss)

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """L_rec + perceptual (+ GAN) over frames + kl_weight * KL / pixels, on a posterior sample."""
        x = batch["image"]
        losses = losses if losses is not None else self.training_losses().to(x.device)
        post = self.posterior(x)
        recon = self.decode_latent(post.sample(batch.get("seed")))
        kl = 0.5 * (post.mean.pow(2) + post.logvar.exp() - 1.0 - post.logvar).flatten(1).sum(1).mean() / x[0].numel()
        frames, recon_frames = as_frames(x), as_frames(recon)
        out = losses(frames, recon_frames, self.cfg.kl_weight * kl, step, self.last_layer(), None)
        return {**out, "kl": kl.detach()}


def as_frames(x: Tensor) -> Tensor:
    """Images (B, 3, H, W) as they are; clips (B, 3, T, H, W) -> frames (B*T, 3, H, W)."""
    return x if x.ndim == 4 else x.transpose(1, 2).flatten(0, 1)


def vitok_param_count(variant: str, *, resolution: int = 256, channels: int = 16, frames: int = 1) -> dict[str, int]:
    """Parameters of a named variant (``VITOK_VARIANTS``) on the meta device: encoder, decoder, total."""
    enc, dec, p = VITOK_VARIANTS[variant]
    vit = {
        k: ViTConfig(depth=d, width=w, num_heads=h) for k, (d, w, h) in (("e", VIT_SIZES[enc]), ("d", VIT_SIZES[dec]))
    }
    cfg = ViTokTokenizer.Config(frames=frames, patch=p, channels=channels, encoder=vit["e"], decoder=vit["d"])
    with torch.device("meta"):
        tok = ViTokTokenizer(cfg, resolution=resolution)
    count = {"encoder": sum(q.numel() for m in (tok.embed, tok.encoder, tok.to_moments) for q in m.parameters())}
    count["decoder"] = sum(q.numel() for m in (tok.from_latent, tok.decoder, tok.to_pixels) for q in m.parameters())
    return {**count, "total": count["encoder"] + count["decoder"]}
