"""Continuous tokenizers on the LDM conv autoencoder: KL-VAE and VA-VAE.

- ``kl-vae``: LDM's AutoencoderKL (Rombach et al. 2022; SD's VAE is one): the encoder emits the mean and the
  log-variance of a diagonal Gaussian posterior (2 x z_channels), ``quant_conv`` (1x1, 2z -> 2C) and
  ``post_quant_conv`` (1x1, C -> z) as in LDM; trained on reconstruction + perceptual + PatchGAN (the shared
  ``TokenizerCriterion``) + kl_weight * KL, the KL in the place the quantizer loss takes for VQ.
- ``va-vae``: "Reconstruction vs. Generation" (Yao et al. 2025, hustvl/LightningDiT): the KL-VAE plus the
  vision-foundation alignment loss (eqs. 2-5) of the projected latent against a frozen encoder's patch features.

**Latent normalisation is part of the weights.** Persistent buffers ``latent_mean``, ``latent_std`` (C,) and
``latent_stats_fitted`` are estimated from data with ``fit_latent_stats`` (``genlab train`` does it at export);
``encode`` returns (z - mean) / std and ``decode`` inverts it, so no generator sees raw latents. Before the stats
are fitted, ``encode``/``decode`` refuse (LightningDiT #34, #57: forgetting them gives FID 130 and blurry
decodes); ``roundtrip`` (posterior mean -> decoder) works at any time, for previews and reconstruction metrics.

Loss scale: LDM sums its NLL over the pixels of a sample, genlab's criterion averages it, so the KL term here is
the per-sample KL sum divided by 3 * H * W: ``kl_weight`` keeps LDM's meaning (1e-6), and the adaptive GAN and
alignment weights, being ratios of gradients, are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from genlab.config import component_from_dict, to_dict
from genlab.nn import per_sample_randn
from genlab.nn.conv import Conv2d
from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.convnet import ConvNetConfig, Decoder, Encoder
from genlab.tokenizers.encoders import Frozen
from genlab.tokenizers.losses import LossConfig, TokenizerCriterion, adaptive_weight

NOISE = 0x5EED  # per-sample noise stream of the posterior sample


class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))) from moments (B, 2C, h, w); logvar clamped to [-30, 20] as in LDM."""

    def __init__(self, moments: Tensor):
        self.mean, logvar = moments.float().chunk(2, dim=1)  # (B, C, h, w) each
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, seeds: Tensor | None = None) -> Tensor:
        """z = mean + std * eps; eps of sample i from seed i when ``seeds`` (B,) are given."""
        shape = tuple(self.mean.shape[1:])
        if seeds is None:
            eps = torch.randn_like(self.mean)
        else:
            eps = per_sample_randn(seeds, shape, stream=NOISE, device=self.mean.device)
        return self.mean + self.std * eps

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) per sample (B,): 0.5 * sum(mean^2 + var - 1 - logvar) over (C, h, w)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum((1, 2, 3))


class FittedLatentStats:
    """What a continuous tokenizer with fitted latent statistics shares (KL-VAE, VA-VAE, ViTok): it needs
    ``posterior(images).mean``, ``decode_latent``, ``cfg.normalize`` and the ``latent_stats_fitted`` buffer."""

    @torch.no_grad()
    def roundtrip(self, images: Tensor) -> Tensor:
        """Posterior mean -> decoder: a reconstruction that needs no latent statistics."""
        return self.decode_latent(self.posterior(images).mean)

    @property
    def stats_fitted(self) -> bool:
        return self.cfg.normalize == "none" or bool(self.latent_stats_fitted)

    @torch.no_grad()
    def fit_latent_stats(self, batches: Iterable[Tensor], *, progress: bool = False, total: int | None = None) -> None:
        """Per-channel mean/std of posterior means (B, C, ...) over image or clip batches (float64 accumulation);
        the KL-VAE overrides it (its ``scalar`` option)."""
        C = self.latent_mean.numel()
        s1, s2, n = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), 0
        for x in tqdm(batches, total=total, desc="latent stats", unit="batch", disable=not progress):
            z = self.posterior(x.to(self.latent_mean.device)).mean.double().cpu().transpose(0, 1).flatten(1)  # (C, M)
            s1, s2, n = s1 + z.sum(1), s2 + z.pow(2).sum(1), n + z.shape[1]
        if n == 0:
            raise TokenizerError("fit_latent_stats: no images")
        mean = s1 / n
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_((s2 / n - mean.pow(2)).clamp_min(1e-12).sqrt().float())
        self.latent_stats_fitted.fill_(True)

    def _require_stats(self, what: str) -> None:
        if not self.stats_fitted:
            raise TokenizerError(
                f"{what}: this {type(self).__name__}'s latent mean/std were never fitted, and a generator trained on "
                "raw latents trains badly (LightningDiT #34: FID 130). Fit them with fit_latent_stats(batches) "
                "(genlab train does it at export); roundtrip(images) reconstructs without them"
            )


@register("tokenizer", "kl-vae")
class KLVAETokenizer(FittedLatentStats, Tokenizer):
    LOG_KEYS = ("kl",)

    @dataclass
    class Config:
        net: ConvNetConfig = field(default_factory=lambda: ConvNetConfig(z_channels=4))  # the encoder emits 2x z
        embed_dim: int = 4  # latent channels C of the tokens (quant_conv: 2z -> 2C, post_quant_conv: C -> z)
        kl_weight: float = 1e-6  # weight of the KL term (LDM, VA-VAE: 1e-6), on LDM's scale (module docstring)
        normalize: Literal["channel", "scalar", "none"] = "channel"  # latent statistics: per channel, one, or none
        stats_images: int = 2048  # training images the statistics are fitted on at export (genlab train)
        sample_posterior: bool = False  # encode with a posterior sample (LightningDiT's features) instead of the mean
        loss: LossConfig = field(default_factory=LossConfig)  # training losses (rec, perceptual, GAN)

        def validate(self) -> None:
            if self.embed_dim < 1:
                raise ValueError(f"embed_dim must be positive, got {self.embed_dim}")
            if self.kl_weight < 0:
                raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
            if self.stats_images < 1:
                raise ValueError(f"stats_images must be positive, got {self.stats_images}")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        f, z, C = cfg.net.factor, cfg.net.z_channels, cfg.embed_dim
        if resolution % f:
            raise TokenizerError(f"resolution {resolution} is not a multiple of the downsampling factor {f}")
        self.grid = resolution // f
        self.encoder = Encoder(replace(cfg.net, z_channels=2 * z))  # (B, 3, H, W) -> (B, 2z, h, w)
        self.decoder = Decoder(cfg.net)  # (B, z, h, w) -> (B, 3, H, W)
        self.quant_conv = Conv2d(2 * z, 2 * C, 1)
        self.post_quant_conv = Conv2d(C, z, 1)
        self.register_buffer("latent_mean", torch.zeros(C))
        self.register_buffer("latent_std", torch.ones(C))
        self.register_buffer("latent_stats_fitted", torch.tensor(False))
        self.token_spec = TokenSpec("continuous", (C, self.grid, self.grid))

    # -- the autoencoder

    def posterior(self, images: Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.quant_conv(self.encoder(images)))

    def decode_latent(self, z: Tensor) -> Tensor:
        """Raw (unnormalised) latent (B, C, h, w) -> images (B, 3, H, W)."""
        return self.decoder(self.post_quant_conv(z))

    @torch.no_grad()
    def fit_latent_stats(self, batches: Iterable[Tensor], *, progress: bool = False, total: int | None = None) -> None:
        """Estimate ``latent_mean``/``latent_std`` from posterior means of image batches (float64 accumulation):
        per channel (``normalize: channel``) or one value for all channels (``scalar``)."""
        C = self.cfg.embed_dim
        s1 = torch.zeros(C, dtype=torch.float64)
        s2 = torch.zeros(C, dtype=torch.float64)
        n = 0
        device = self.latent_mean.device
        for images in tqdm(batches, total=total, desc="latent stats", unit="batch", disable=not progress):
            z = self.posterior(images.to(device)).mean.double().cpu()  # (B, C, h, w)
            s1 += z.sum((0, 2, 3))
            s2 += z.pow(2).sum((0, 2, 3))
            n += z.numel() // C
        if n == 0:
            raise TokenizerError("fit_latent_stats: no images")
        if self.cfg.normalize == "scalar":
            s1, s2, n = s1.sum().expand(C), s2.sum().expand(C), n * C
        mean = s1 / n
        std = (s2 / n - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.latent_mean.copy_(mean.float())
        self.latent_std.copy_(std.float())
        self.latent_stats_fitted.fill_(True)

    # -- the Tokenizer contract

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> normalised latents (B, C, h, w): (z - latent_mean) / latent_std."""
        self._require_stats("encode")
        post = self.posterior(images)
        z = post.sample() if self.cfg.sample_posterior else post.mean
        if self.cfg.normalize == "none":
            return z
        return (z - self.latent_mean.view(1, -1, 1, 1)) / self.latent_std.view(1, -1, 1, 1)

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        """Normalised latents (B, C, h, w) -> images: denormalise, then decode."""
        self._require_stats("decode")
        z = tokens
        if self.cfg.normalize != "none":
            z = tokens * self.latent_std.view(1, -1, 1, 1) + self.latent_mean.view(1, -1, 1, 1)
        return self.decode_latent(z)

    def last_layer(self) -> Tensor:
        """The decoder's last weight (VQGAN's adaptive GAN weight)."""
        return self.decoder.last_layer

    def training_losses(self) -> nn.Module:
        return TokenizerCriterion(self.cfg.loss)

    def alignment(self, images: Tensor, z: Tensor, losses: nn.Module):
        """An extra loss term given the NLL (VA-VAE), or None."""
        return None

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """L_nll (rec + perceptual) + kl_weight * KL / (3HW) (+ GAN) (+ alignment), on a posterior sample."""
        losses = losses if losses is not None else self.training_losses().to(batch["image"].device)
        images = batch["image"]  # (B, 3, H, W)
        post = self.posterior(images)
        z = post.sample(batch.get("seed"))  # (B, C, h, w), reparameterised
        recon = self.decode_latent(z)
        kl = post.kl().mean() / images[0].numel()
        extra = self.alignment(images, z, losses)
        out = losses(images, recon, self.cfg.kl_weight * kl, step, self.last_layer(), extra)
        return {**out, "kl": kl.detach()}


# ----------------------------------------------------------------------------- VA-VAE


def vf_cos_loss(z: Tensor, f: Tensor, margin: float) -> Tensor:
    """VA-VAE's marginal cosine similarity loss: mean over samples and positions i of ReLU(1 - m1 - cos(z_i, f_i));
    z, f (B, D, h, w)."""
    return F.relu(1 - margin - F.cosine_similarity(z, f, dim=1)).mean()


def vf_distmat_loss(z: Tensor, f: Tensor, margin: float) -> Tensor:
    """VA-VAE's marginal distance matrix similarity loss: mean over samples and all pairs (i, j) (i = j included,
    as LightningDiT) of ReLU(|cos(z_i, z_j) - cos(f_i, f_j)| - m2); z, f (B, D, h, w)."""
    zn = F.normalize(z.flatten(2), dim=1)  # (B, D, N)
    fn = F.normalize(f.flatten(2), dim=1)
    sim_z = torch.einsum("bdi,bdj->bij", zn, zn)  # (B, N, N)
    sim_f = torch.einsum("bdi,bdj->bij", fn, fn)
    return F.relu((sim_z - sim_f).abs() - margin).mean()


@dataclass
class VFConfig:
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "dinov2"})  # a registered image_encoder
    weight: float = 0.1  # vf_weight, times the adaptive ratio (paper's final recipe: 0.1)
    cos_margin: float = 0.5  # m1 of the marginal cosine similarity loss
    distmat_margin: float = 0.25  # m2 of the marginal distance matrix similarity loss
    adaptive: bool = True  # weight = vf_weight * ||grad L_nll|| / ||grad L_vf|| at the encoder's last layer

    def validate(self) -> None:
        comp = component_from_dict("image_encoder", dict(self.encoder), "tokenizer.vf.encoder")
        self.encoder = to_dict(comp)
        if self.weight < 0:
            raise ValueError(f"vf.weight must be >= 0, got {self.weight}")


class VFAlignment(nn.Module):
    """The VF loss: reverse_proj (1x1 conv, C -> D, no bias, as LightningDiT) of the latent sample against the
    frozen encoder's features, resized (bilinear) to the latent grid. The encoder is held outside the module tree."""

    def __init__(self, cfg: VFConfig, latent_channels: int):
        super().__init__()
        self.cfg = cfg
        spec = dict(cfg.encoder)
        self.encoder = Frozen(component_from_dict("image_encoder", spec, "tokenizer.vf.encoder").build())
        self.dim = self.encoder.module.dim
        self.reverse_proj = Conv2d(latent_channels, self.dim, 1, bias=False)

    def features(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        with torch.no_grad():
            f = self.encoder(images).float()  # (B, D, h', w')
        if tuple(f.shape[-2:]) != tuple(grid):
            f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
        return f  # (B, D, h, w)

    def forward(self, z: Tensor, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(L_vf, L_cos, L_distmat) for the latent sample z (B, C, h, w) of ``images``."""
        zp = self.reverse_proj(z)  # (B, D, h, w)
        f = self.features(images, tuple(z.shape[-2:]))
        cos = vf_cos_loss(zp, f, self.cfg.cos_margin)
        dist = vf_distmat_loss(zp, f, self.cfg.distmat_margin)
        return cos + dist, cos, dist


class VAVAECriterion(TokenizerCriterion):
    """The shared tokenizer criterion plus the VF alignment (its projection trains; its encoder is frozen)."""

    def __init__(self, cfg: LossConfig, vf: VFConfig, latent_channels: int):
        super().__init__(cfg)
        self.vf = VFAlignment(vf, latent_channels)


@register("tokenizer", "va-vae")
class VAVAETokenizer(KLVAETokenizer):
    LOG_KEYS = ("kl", "vf", "vf_cos", "vf_distmat", "vf_weight")

    @dataclass
    class Config(KLVAETokenizer.Config):
        vf: VFConfig = field(default_factory=VFConfig)  # the vision-foundation alignment loss

        def validate(self) -> None:
            super().validate()
            self.vf.validate()

    def training_losses(self) -> nn.Module:
        return VAVAECriterion(self.cfg.loss, self.cfg.vf, self.cfg.embed_dim)

    def encoder_last_layer(self) -> Tensor:
        return self.encoder.conv_out.weight

    def alignment(self, images: Tensor, z: Tensor, losses: nn.Module):
        """Eq. 5: L = L_nll + ... + w_adaptive * vf_weight * L_vf, the ratio taken at the encoder's last layer."""
        vf, cos, dist = losses.vf(z, images)
        cfg = self.cfg.vf

        def term(nll: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
            adaptive = cfg.adaptive and losses.training and torch.is_grad_enabled()
            w = adaptive_weight(nll, vf, self.encoder_last_layer(), max_weight=1e8) if adaptive else 1.0
            w = cfg.weight * torch.as_tensor(w, dtype=torch.float32, device=vf.device)
            logs = {"vf": vf.detach(), "vf_cos": cos.detach(), "vf_distmat": dist.detach(), "vf_weight": w.detach()}
            return w * vf, logs

        return term
