"""2-D discrete tokenizers on the VQGAN conv autoencoder (Esser et al. 2021), with any registered quantizer.

- ``vqgan``: one code per position (VQ, FSQ or LFQ): tokens (B, h, w). LlamaGen's VQ-16, MaskGIT's VQGAN.
- ``rqvae``: D residual codes per position (RQ-VAE, Lee et al. 2022; ResGen's tokenizer): tokens (B, h, w, D);
  decodes from the first d depths too; ``flatten_depth``: the same tokens as one (B, h*w*D) discrete sequence.
- ``msvq-vae``: VAR's multi-scale VQVAE (Tian et al. 2024): tokens are a list of (B, s_k, s_k) maps, coarse to
  fine; decodes from any prefix of scales, from its own or from ground-truth maps.

image -> Encoder -> quant_conv -> quantizer -> post_quant_conv -> Decoder -> image. Training losses live in
``genlab.tokenizers.losses`` and are built by ``training_losses()`` so that a trained tokenizer's weights hold
neither the discriminator nor the perceptual net.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.config import ConfigError, component_from_dict, to_dict
from genlab.nn.conv import Conv2d
from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.convnet import ConvNetConfig, Decoder, Encoder
from genlab.tokenizers.losses import LossConfig, TokenizerCriterion
from genlab.tokenizers.quantizers import Quantized, from_rows, to_rows


def resolve_quantizer(spec: dict, allowed: tuple[str, ...]) -> dict:
    """The quantizer section with every default filled in (so config.yaml is fully resolved)."""
    comp = component_from_dict("quantizer", dict(spec), "tokenizer.quantizer")
    if comp.name not in allowed:
        raise ConfigError(f"tokenizer.quantizer.name: this tokenizer takes {', '.join(allowed)}, got {comp.name!r}")
    return to_dict(comp)


@register("tokenizer", "vqgan")
class VQGANTokenizer(Tokenizer):
    KIND = "discrete"

    @dataclass
    class Config:
        net: ConvNetConfig = field(default_factory=ConvNetConfig)  # encoder/decoder architecture
        embed_dim: int = 8  # channels of the quantised latent (quant_conv: z_channels -> embed_dim)
        quant_conv_kernel: int = 1  # 1 (taming, LlamaGen), 3 (VAR); 0: no quant convs (MaskGIT; embed_dim = z)
        quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "vq", "codebook_size": 1024})  # a quantizer
        loss: LossConfig = field(default_factory=LossConfig)  # training losses
        unit_range: bool = False  # the network sees and returns images in [0, 1] (MaskGIT's VQGAN as released)
        quantizers: ClassVar[tuple[str, ...]] = ("vq", "fsq", "lfq")  # the quantizers this tokenizer takes

        def validate(self) -> None:
            # a quantizer section without a name is the tokenizer's first choice (vq, rvq, msvq)
            self.quantizer = resolve_quantizer({"name": self.quantizers[0], **self.quantizer}, self.quantizers)
            if self.quant_conv_kernel == 0 and self.embed_dim != self.net.z_channels:
                raise ValueError("without quant convs (quant_conv_kernel: 0) embed_dim must equal net.z_channels")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        cfg.validate()  # also fills in the quantizer's defaults when cfg was built in code
        self.cfg = cfg
        f = cfg.net.factor
        if resolution % f:
            raise TokenizerError(f"resolution {resolution} is not a multiple of the downsampling factor {f}")
        self.grid = resolution // f
        self.encoder = Encoder(cfg.net)
        self.decoder = Decoder(cfg.net)
        k, z, e = cfg.quant_conv_kernel, cfg.net.z_channels, cfg.embed_dim
        self.quant_conv = Conv2d(z, e, k, padding=k // 2) if k else nn.Identity()
        self.post_quant_conv = Conv2d(e, z, k, padding=k // 2) if k else nn.Identity()
        self.quantizer = component_from_dict("quantizer", dict(cfg.quantizer), "tokenizer.quantizer").build(dim=e)
        self.token_spec = self.make_token_spec()

    def make_token_spec(self) -> TokenSpec:
        return TokenSpec(
            self.KIND, (self.grid, self.grid), vocab_size=self.quantizer.codebook_size, code_dim=self.cfg.embed_dim
        )

    # -- the Tokenizer contract

    def quantize(self, images: Tensor) -> Quantized:
        """Images in [-1, 1] (B, 3, H, W) -> the quantised latent ([0, 1] to the network with ``unit_range``)."""
        x = (images + 1) / 2 if self.cfg.unit_range else images
        return self.quantizer(self.quant_conv(self.encoder(x)))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Quantised latent (B, embed_dim, h, w) -> images in [-1, 1]."""
        out = self.decoder(self.post_quant_conv(codes))
        return out * 2 - 1 if self.cfg.unit_range else out

    @torch.no_grad()
    def encode(self, images: Tensor):
        return self.quantize(images).indices

    def indices_to_codes(self, tokens) -> Tensor:
        """Tokens -> the quantised latent (B, embed_dim, h, w) the decoder reads (and generators may embed)."""
        return self.quantizer.indices_to_codes(tokens)

    @torch.no_grad()
    def decode(self, tokens, seeds: Tensor | None = None) -> Tensor:
        return self.decode_codes(self.indices_to_codes(tokens))

    def last_layer(self) -> Tensor:
        return self.decoder.last_layer

    def training_losses(self) -> nn.Module:
        return TokenizerCriterion(self.cfg.loss)

    def reconstruct(self, images: Tensor) -> tuple[Tensor, Quantized]:
        q = self.quantize(images)
        return self.decode_codes(q.codes), q

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """Reconstruction + perceptual + quantizer (+ GAN) terms; ``losses`` from ``training_losses()``."""
        losses = losses if losses is not None else self.training_losses().to(batch["image"].device)
        images = batch["image"]
        recon, q = self.reconstruct(images)
        out = losses(images, recon, q.loss, step, self.last_layer())
        return {**out, **{f"q_{k}": v for k, v in q.terms.items()}, **q.stats}


@register("tokenizer", "rqvae")
class RQVAETokenizer(VQGANTokenizer):
    KIND = "residual"

    @dataclass
    class Config(VQGANTokenizer.Config):
        quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "rvq", "depth": 4})
        # the depth-flattened view: one discrete sequence of h*w*depth ids (raster order, depth fastest) that any
        # model of 1-D discrete tokens (MaskGIT, GPT) takes; same network and weights
        flatten_depth: bool = False
        quantizers: ClassVar[tuple[str, ...]] = ("rvq",)

    def make_token_spec(self) -> TokenSpec:
        depth, K, e = self.quantizer.cfg.depth, self.quantizer.codebook_size, self.cfg.embed_dim
        if self.cfg.flatten_depth:
            return TokenSpec("discrete", (self.grid * self.grid * depth,), vocab_size=K, code_dim=e)
        return TokenSpec(self.KIND, (self.grid, self.grid, depth), vocab_size=K, code_dim=e)

    def stacks(self, tokens: Tensor) -> Tensor:
        """Tokens (flattened or not) -> (B, h, w, depth) stacks."""
        return tokens.reshape(tokens.shape[0], self.grid, self.grid, self.quantizer.cfg.depth)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        ids = self.quantize(images).indices  # (B, h, w, depth)
        return ids.reshape(ids.shape[0], -1) if self.cfg.flatten_depth else ids

    def indices_to_codes(self, tokens: Tensor) -> Tensor:
        return self.quantizer.indices_to_codes(self.stacks(tokens))

    def depth_codes(self, d: int, ids: Tensor) -> Tensor:
        """Depth d's code vectors (B, embed_dim, h, w) of ids (B, h, w)."""
        return self.quantizer.vq_at(d).indices_to_codes(ids)

    @torch.no_grad()
    def quantize_at(self, d: int, residual: Tensor) -> tuple[Tensor, Tensor]:
        """(ids (B, h, w), codes (B, embed_dim, h, w)): depth d's nearest codes to ``residual`` (B, embed_dim, h, w)."""
        B, _, h, w = residual.shape
        vq = self.quantizer.vq_at(d)
        e, idx, _ = vq.quantize_rows(vq.project_in(to_rows(residual.float())))
        return idx.reshape(B, h, w), from_rows(e, (B, h, w))

    def depth_codebook(self, d: int) -> Tensor:
        """Depth d's code vectors (K, code_dim) in the latent space, without gradients."""
        vq = self.quantizer.vq_at(d)
        return vq.out_proj(vq.embeddings()).detach()

    @torch.no_grad()
    def nearest_at(self, d: int, residual: Tensor) -> Tensor:
        """Depth d's code ids (M,) nearest to residual vectors (M, code_dim), as the quantizer chooses them."""
        vq = self.quantizer.vq_at(d)
        return vq.lookup(vq.project_in(residual))

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None, *, depth: int | None = None) -> Tensor:
        """Images from the first ``depth`` (default: all) codes per position (a deterministic decoder: no seeds)."""
        return self.decode_codes(self.quantizer.indices_to_codes(self.stacks(tokens), depth=depth))


@register("tokenizer", "msvq-vae")
class MultiScaleVQTokenizer(VQGANTokenizer):
    KIND = "multiscale"

    @dataclass
    class Config(VQGANTokenizer.Config):
        quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "msvq"})
        quantizers: ClassVar[tuple[str, ...]] = ("msvq",)

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__(cfg, resolution=resolution)
        if self.quantizer.scales[-1] != self.grid:
            raise TokenizerError(
                f"the last scale ({self.quantizer.scales[-1]}) must equal the latent side {self.grid} "
                f"(resolution / {self.cfg.net.factor})"
            )

    def make_token_spec(self) -> TokenSpec:
        s = self.quantizer.scales
        K, e = self.quantizer.codebook_size, self.cfg.embed_dim
        return TokenSpec(self.KIND, (s[-1], s[-1]), vocab_size=K, scales=tuple(s), code_dim=e)

    @torch.no_grad()
    def decode(self, tokens: list[Tensor], seeds: Tensor | None = None) -> Tensor:
        """Images from the token maps of any prefix of scales (its own, or ground-truth maps)."""
        if not 1 <= len(tokens) <= len(self.quantizer.scales):
            raise TokenizerError(f"expected 1..{len(self.quantizer.scales)} token maps, got {len(tokens)}")
        for k, t in enumerate(tokens):
            s = self.quantizer.scales[k]
            if tuple(t.shape[-2:]) != (s, s):
                raise TokenizerError(f"token map {k} is {tuple(t.shape[-2:])}, scale {k} is {s}x{s}")
        return self.decode_codes(self.quantizer.indices_to_codes(tokens))

    def scale_codes(self, k: int, ids: Tensor) -> Tensor:
        return self.quantizer.vq.indices_to_codes(ids)

    def teacher_forcing_inputs(self, tokens: list[Tensor]) -> list[Tensor]:
        return self.quantizer.teacher_forcing_inputs(tokens)

    def next_scale_input(self, k: int, f_hat: Tensor, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.quantizer.next_scale_input(k, f_hat, codes)
