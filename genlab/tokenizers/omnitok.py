"""OmniTokenizer: "OmniTokenizer: A Joint Image-Video Tokenizer for Visual Generation" (Wang et al., NeurIPS 2024;
FoundationVision/OmniTokenizer). One transformer autoencoder, one set of weights, for images and clips.

- embedding: the first frame alone (LN -> linear -> LN over its p x p patches), the other frames in tubelets of
  ``temporal_patch`` (LN -> linear -> LN over pt x p x p), so a clip of 1 + k * pt frames has 1 + k latent frames
  and an image is a 1-frame clip;
- encoder: spatial blocks over each frame (``encoder_blocks``, the paper's "ttww": two global blocks with 2-D RoPE,
  two window blocks), then ``temporal_depth`` causal temporal blocks over each position's frames
  (``genlab.tokenizers.omnitok_blocks``);
- bottleneck: a linear to ``code_dim`` channels, then VQ (``omnitokenizer``: l2-normalised vectors (``l2_code``), 8192
  codes of 8 dims, genlab's ``vq`` quantizer) or a diagonal Gaussian (``omnitokenizer-kl``, the paper's KL fine-tune);
- decoder: a linear back to the width, causal temporal blocks, spatial blocks (``decoder_blocks``, "tttt"), and
  linear heads to the first frame's patches and to the tubelets.

**Causality.** Temporal attention is causal and every PEG pads only past frames, so latent frame j depends on the
input frames up to its own and decoded frame j on the latent frames up to j: the first frame of any clip is
encoded and decoded exactly as that frame alone, and an image through the clip path (a (B, 3, 1, H, W) clip) is the
image path (tests/test_omnitok.py checks both, and the causal mask row by row).

Tokens: images (B, 3, H, W) give ``(h, w)`` ids (VQ) or ``(C, h, w)`` latents (KL), which every 2-D generator models;
clips (B, 3, T, H, W) give ``(t, h, w)`` / ``(C, t, h, w)``, t = 1 + (T - 1) / temporal_patch. ``frames`` fixes what
``token_spec`` states (the training data's frames); encode and decode take images and any 1 + k * pt frames.

**Progressive training** (the paper's and the public scripts'): images at a fixed resolution first, then images and clips jointly, the
second stage a preset with ``base:`` and ``train.init_from: STAGE1_RUN``. A joint batch is a clip batch with still
images beside it (``data: {name: joint}`` puts them under ``still``, ``genlab.data.joint``); the loss is the shared
``TokenizerCriterion`` over every clip frame and every still image together.

Left out (the public recipe has them): the 3-D video discriminator (genlab's PatchGAN sees frames), the logit-Laplace
term, GAN feature matching, multi-resolution training (resolution_scale 0.5-1.25), and the public Codebook's
initialisation of its EMA codes from the first batch. ``genlab import omnitokenizer`` (``genlab.imports.omnitokenizer``)
reads the released checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import component_from_dict
from genlab.nn import LayerNorm
from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.losses import LossConfig, TokenizerCriterion
from genlab.tokenizers.omnitok_blocks import Stack, patchify, unpatchify
from genlab.tokenizers.vae import DiagonalGaussian, FittedLatentStats
from genlab.tokenizers.vq import resolve_quantizer

STILL_SEEDS = 1 << 40  # offset of the still images' per-sample seeds in a joint batch (their own posterior noise)


@dataclass
class OmniConfig:
    frames: int = 1  # T frames of the clips token_spec describes (1 = images); 1 + k * temporal_patch
    patch: int = 8  # spatial patch p (the paper's f8)
    temporal_patch: int = 4  # frames per tubelet after the first (public stage 1: 2, stage 2 and release: 4)
    width: int = 512  # model width D
    num_heads: int = 8  # attention heads (8 x 64 in the paper)
    mlp_mult: float = 4.0  # GEGLU hidden = int(mlp_mult * 2/3 * width)
    encoder_blocks: str = "ttww"  # spatial encoder blocks: t = global attention (+ PEG), w = window attention
    decoder_blocks: str = "tttt"  # spatial decoder blocks
    temporal_depth: int = 4  # temporal blocks in the encoder and in the decoder (all global, causal)
    window: int = 8  # window side of ``w`` blocks, in tokens (capped at the token grid)
    rope: bool = True  # 2-D RoPE in spatial global attention (the public stage 2's spatial_pos: rope)
    causal: bool = True  # causal temporal attention and PEGs (the paper's; what makes an image a 1-frame clip)
    code_dim: int = 8  # bottleneck channels: VQ code dimension, or the KL latent's channels
    # the temporal stacks' PEG sees each position's frames ("frames"), or the public code's reshape of its (b h w) t d
    # tokens as b t h w d ("public": what its released checkpoints were trained with; genlab import sets it)
    temporal_peg: Literal["frames", "public"] = "frames"
    loss: LossConfig = field(default_factory=LossConfig)  # rec (L1/L2), perceptual, GAN, over frames

    def validate(self) -> None:
        if min(self.frames, self.patch, self.temporal_patch, self.width, self.num_heads, self.code_dim) < 1:
            raise ValueError("frames, patch, temporal_patch, width, num_heads and code_dim must be positive")
        if (self.frames - 1) % self.temporal_patch:
            raise ValueError(
                f"frames - 1 ({self.frames - 1}) must be a multiple of temporal_patch {self.temporal_patch}"
            )
        if self.width % self.num_heads or (self.width // self.num_heads) % 4:
            raise ValueError("width must split into heads whose dimension is a multiple of 4 (2-D RoPE)")
        if set(self.encoder_blocks + self.decoder_blocks) - {"t", "w"} or not self.encoder_blocks:
            raise ValueError("encoder_blocks and decoder_blocks are strings of t (global) and w (window) blocks")
        if self.temporal_depth < 0 or self.window < 1 or self.mlp_mult <= 0:
            raise ValueError("temporal_depth must be >= 0, window >= 1 and mlp_mult > 0")


class OmniAutoencoder(Tokenizer):
    """The encoder and decoder both bottlenecks share; latents inside are (B, C, t, h, w)."""

    LATENT_OUT = 1  # outputs of the bottleneck's input linear per latent channel (VQ 1; KL 2: mean, log-variance)
    Config: Any = OmniConfig

    def __init__(self, cfg: OmniConfig, *, resolution: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        p, pt, D = cfg.patch, cfg.temporal_patch, cfg.width
        if resolution % p:
            raise TokenizerError(f"resolution {resolution} is not a multiple of the patch {p}")
        self.resolution, self.grid = resolution, resolution // p
        window = min(cfg.window, self.grid)
        if self.grid % window:
            raise TokenizerError(
                f"the {self.grid}x{self.grid} token grid does not split into {window}x{window} windows"
            )
        self.embed_first = nn.Sequential(LayerNorm(3 * p * p), nn.Linear(3 * p * p, D), LayerNorm(D))
        self.embed_rest = nn.Sequential(LayerNorm(3 * pt * p * p), nn.Linear(3 * pt * p * p, D), LayerNorm(D))
        kw = dict(dim=D, num_heads=cfg.num_heads, mult=cfg.mlp_mult, causal=cfg.causal, window=window, rope=cfg.rope)
        self.encoder_spatial = Stack(cfg.encoder_blocks, temporal=False, **kw)
        kw["public_peg"] = cfg.temporal_peg == "public"
        self.encoder_temporal = Stack("t" * cfg.temporal_depth, temporal=True, **kw)
        self.to_latent = nn.Linear(D, self.LATENT_OUT * cfg.code_dim)
        self.from_latent = nn.Linear(cfg.code_dim, D)
        self.decoder_temporal = Stack("t" * cfg.temporal_depth, temporal=True, **kw)
        kw["public_peg"] = False
        self.decoder_spatial = Stack(cfg.decoder_blocks, temporal=False, **kw) if cfg.decoder_blocks else nn.Identity()
        self.to_pixels_first = nn.Linear(D, 3 * p * p)
        self.to_pixels = nn.Linear(D, 3 * pt * p * p)

    @property
    def latent_frames(self) -> int:
        return 1 + (self.cfg.frames - 1) // self.cfg.temporal_patch

    # -- inputs: images are 1-frame clips

    def _clips(self, x: Tensor) -> tuple[Tensor, bool]:
        """Images (B, 3, H, W) or clips (B, 3, 1 + k*pt, H, W) -> (clips, whether the input was images)."""
        image = x.ndim == 4
        clips = x.unsqueeze(2) if image else x
        R, pt = self.resolution, self.cfg.temporal_patch
        if clips.ndim != 5 or clips.shape[1] != 3 or tuple(clips.shape[3:]) != (R, R) or (clips.shape[2] - 1) % pt:
            raise TokenizerError(f"omnitokenizer takes images (B, 3, {R}, {R}) or clips (B, 3, 1 + k*{pt}, {R}, {R}), "
                                 f"got {tuple(x.shape)}")  # fmt: skip
        return clips, image

    # -- the autoencoder

    def encode_features(self, clips: Tensor) -> Tensor:
        """Clips (B, 3, T, H, W) -> bottleneck inputs (B, LATENT_OUT * C, t, h, w): first frame alone, then tubelets."""
        p, pt = self.cfg.patch, self.cfg.temporal_patch
        x = self.embed_first(patchify(clips[:, :, :1], 1, p))  # (B, 1, h, w, D)
        if clips.shape[2] > 1:
            x = torch.cat([x, self.embed_rest(patchify(clips[:, :, 1:], pt, p))], dim=1)  # (B, t, h, w, D)
        x = self.encoder_temporal(self.encoder_spatial(x))
        return self.to_latent(x).permute(0, 4, 1, 2, 3)

    def decode_latent(self, z: Tensor) -> Tensor:
        """Latents (B, C, t, h, w) -> clips (B, 3, 1 + (t-1)*pt, H, W)."""
        x = self.decoder_spatial(self.decoder_temporal(self.from_latent(z.permute(0, 2, 3, 4, 1))))  # (B, t, h, w, D)
        out = unpatchify(self.to_pixels_first(x[:, :1]), 1, self.cfg.patch)  # (B, 3, 1, H, W)
        if x.shape[1] > 1:
            out = torch.cat([out, unpatchify(self.to_pixels(x[:, 1:]), self.cfg.temporal_patch, self.cfg.patch)], 2)
        return out

    def last_layer(self) -> Tensor:
        return self.to_pixels_first.weight  # the head every image and clip uses (the adaptive GAN weight's layer)

    def training_losses(self) -> nn.Module:
        return TokenizerCriterion(self.cfg.loss)

    def reconstruct(self, clips: Tensor, seeds: Tensor | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Clips -> (reconstructed clips, the bottleneck's weighted loss, its logs); a bottleneck implements it."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """L_rec + perceptual (+ GAN) over every frame of the clips (and of the still images of a joint batch,
        ``batch["still"]``), + the bottleneck's term (VQ's commitment and codebook, or kl_weight * KL)."""
        clips, _ = self._clips(batch["image"])
        losses = losses if losses is not None else self.training_losses().to(clips.device)
        seeds = batch.get("seed")
        recon, aux, logs = self.reconstruct(clips, seeds)
        frames, recon_frames = [as_frames(clips)], [as_frames(recon)]
        if "still" in batch:  # a joint batch: the image path on still images beside the clips
            stills, _ = self._clips(batch["still"])
            recon_s, aux_s, _ = self.reconstruct(stills, None if seeds is None else seeds + STILL_SEEDS)
            frames, recon_frames, aux = [*frames, stills[:, :, 0]], [*recon_frames, recon_s[:, :, 0]], aux + aux_s
        out = losses(torch.cat(frames), torch.cat(recon_frames), aux, step, self.last_layer(), None)
        return {**out, **logs}


def as_frames(clips: Tensor) -> Tensor:
    """Clips (B, 3, T, H, W) -> frames (B*T, 3, H, W)."""
    return clips.transpose(1, 2).flatten(0, 1)


@register("tokenizer", "omnitokenizer")
class OmniTokenizer(OmniAutoencoder):
    """OmniTokenizer-VQ: ids (h, w) per image, (t, h, w) per clip."""

    @dataclass
    class Config(OmniConfig):
        # genlab's vq quantizer: the public Codebook's 8192 codes, EMA 0.99, commitment 0.25 (on l2_code inputs)
        quantizer: dict[str, Any] = field(
            default_factory=lambda: {"name": "vq", "codebook_size": 8192, "ema_decay": 0.99}
        )
        # l2-normalise the encoder's vectors before the quantizer (the public l2_code: its EMA codes are not)
        l2_code: bool = True
        quantizers: ClassVar[tuple[str, ...]] = ("vq", "fsq", "lfq")  # the quantizers this tokenizer takes

        def validate(self) -> None:
            super().validate()
            self.quantizer = resolve_quantizer({"name": self.quantizers[0], **self.quantizer}, self.quantizers)

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__(cfg, resolution=resolution)
        self.quantizer = component_from_dict("quantizer", dict(cfg.quantizer), "tokenizer.quantizer").build(
            dim=cfg.code_dim
        )
        t, g, K = self.latent_frames, self.grid, self.quantizer.codebook_size
        shape = (g, g) if cfg.frames == 1 else (t, g, g)
        self.token_spec = TokenSpec("discrete", shape, vocab_size=K, code_dim=cfg.code_dim)

    def quantize(self, clips: Tensor):
        """Clips -> (Quantized over frames folded into the batch, t)."""
        z = self.encode_features(clips)  # (B, C, t, h, w)
        z = F.normalize(z, dim=1) if self.cfg.l2_code else z
        t = z.shape[2]
        return self.quantizer(z.transpose(1, 2).flatten(0, 1)), t  # codes (B*t, C, h, w), ids (B*t, h, w)

    def reconstruct(self, clips: Tensor, seeds: Tensor | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        q, t = self.quantize(clips)
        codes = q.codes.unflatten(0, (-1, t)).transpose(1, 2)  # (B, C, t, h, w)
        return self.decode_latent(codes), q.loss, {**{f"q_{k}": v for k, v in q.terms.items()}, **q.stats}

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> ids (B, h, w); clips -> ids (B, t, h, w)."""
        clips, image = self._clips(images)
        q, t = self.quantize(clips)
        ids = q.indices.unflatten(0, (-1, t))  # (B, t, h, w)
        return ids[:, 0] if image else ids

    def indices_to_codes(self, tokens: Tensor) -> Tensor:
        """Ids (B, h, w) -> codes (B, C, h, w); (B, t, h, w) -> (B, C, t, h, w)."""
        if tokens.ndim == 3:
            return self.quantizer.indices_to_codes(tokens)
        codes = self.quantizer.indices_to_codes(tokens.flatten(0, 1))  # (B*t, C, h, w)
        return codes.unflatten(0, tokens.shape[:2]).transpose(1, 2)

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        """Ids (B, h, w) -> images (B, 3, H, W); (B, t, h, w) -> clips (B, 3, 1 + (t-1)*pt, H, W). Deterministic."""
        if tokens.ndim not in (3, 4) or tuple(tokens.shape[-2:]) != (self.grid, self.grid):
            raise TokenizerError(
                f"omnitokenizer decodes ids (B, [t,] {self.grid}, {self.grid}), got {tuple(tokens.shape)}"
            )
        codes = self.indices_to_codes(tokens)
        clips = self.decode_latent(codes.unsqueeze(2) if tokens.ndim == 3 else codes)
        return clips[:, :, 0] if tokens.ndim == 3 else clips


@register("tokenizer", "omnitokenizer-kl")
class OmniTokenizerKL(FittedLatentStats, OmniAutoencoder):
    """OmniTokenizer-KL (the paper's VAE): latents (C, h, w) per image, (C, t, h, w) per clip, normalised per
    channel by statistics fitted at export (``FittedLatentStats``, as the KL-VAE and ViTok)."""

    LATENT_OUT = 2
    LOG_KEYS = ("kl",)

    @dataclass
    class Config(OmniConfig):
        kl_weight: float = 1e-6  # KL weight on the KL-VAE's scale (per-sample KL sum / pixels; the paper's 1e-6)
        normalize: Literal["channel", "none"] = "channel"  # latent statistics per channel (fitted), or none
        stats_images: int = 256  # training images / clips the statistics are fitted on at export

        def validate(self) -> None:
            super().validate()
            if self.kl_weight < 0 or self.stats_images < 1:
                raise ValueError("kl_weight must be >= 0 and stats_images positive")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__(cfg, resolution=resolution)
        C, t, g = cfg.code_dim, self.latent_frames, self.grid
        self.register_buffer("latent_mean", torch.zeros(C))
        self.register_buffer("latent_std", torch.ones(C))
        self.register_buffer("latent_stats_fitted", torch.tensor(False))
        self.token_spec = TokenSpec("continuous", (C, g, g) if cfg.frames == 1 else (C, t, g, g))

    def posterior(self, x: Tensor) -> DiagonalGaussian:
        """Images or clips -> q(z | x), moments (B, 2C, t, h, w)."""
        return DiagonalGaussian(self.encode_features(self._clips(x)[0]))

    def reconstruct(self, clips: Tensor, seeds: Tensor | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        post = self.posterior(clips)
        kl = 0.5 * (post.mean.pow(2) + post.logvar.exp() - 1.0 - post.logvar).flatten(1).sum(1).mean()
        kl = kl / clips[0].numel()  # per-sample KL sum / pixels (the KL-VAE's scale)
        return self.decode_latent(post.sample(seeds)), self.cfg.kl_weight * kl, {"kl": kl.detach()}

    def _stat_view(self, v: Tensor) -> Tensor:
        return v.view(1, -1, 1, 1, 1)

    @torch.no_grad()
    def roundtrip(self, images: Tensor) -> Tensor:
        """Posterior mean -> decoder (no latent statistics needed); images in, images out."""
        clips, image = self._clips(images)
        out = self.decode_latent(self.posterior(clips).mean)
        return out[:, :, 0] if image else out

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> normalised posterior means (B, C, h, w); clips -> (B, C, t, h, w)."""
        self._require_stats("encode")
        image = images.ndim == 4
        z = self.posterior(images).mean
        if self.cfg.normalize != "none":
            z = (z - self._stat_view(self.latent_mean)) / self._stat_view(self.latent_std)
        return z[:, :, 0] if image else z

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        """Normalised latents (B, C, h, w) -> images; (B, C, t, h, w) -> clips. Deterministic."""
        self._require_stats("decode")
        if tokens.ndim not in (4, 5) or tokens.shape[1] != self.cfg.code_dim:
            raise TokenizerError(f"omnitokenizer-kl decodes latents (B, {self.cfg.code_dim}, [t,] h, w), "
                                 f"got {tuple(tokens.shape)}")  # fmt: skip
        z = tokens.unsqueeze(2) if tokens.ndim == 4 else tokens
        if self.cfg.normalize != "none":
            z = z * self._stat_view(self.latent_std) + self._stat_view(self.latent_mean)
        clips = self.decode_latent(z)
        return clips[:, :, 0] if tokens.ndim == 4 else clips


def omnitok_param_count(cfg: OmniConfig, resolution: int = 256, *, kl: bool = False) -> dict[str, int]:
    """Parameters of a config on the meta device: encoder (embedding, blocks, the bottleneck's linear), quantizer,
    decoder, total (no discriminator)."""
    cls = OmniTokenizerKL if kl else OmniTokenizer
    with torch.device("meta"):
        tok = cls(cls.Config(**{k: getattr(cfg, k) for k in OmniConfig.__dataclass_fields__}), resolution=resolution)

    def params(*modules: nn.Module) -> int:
        return sum(q.numel() for m in modules for q in m.parameters())

    count = {
        "encoder": params(tok.embed_first, tok.embed_rest, tok.encoder_spatial, tok.encoder_temporal, tok.to_latent),
        "quantizer": 0 if kl else params(tok.quantizer),
        "decoder": params(
            tok.from_latent, tok.decoder_temporal, tok.decoder_spatial, tok.to_pixels_first, tok.to_pixels
        ),
    }
    return {**count, "total": sum(count.values())}
