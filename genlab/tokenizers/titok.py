"""TiTok: a 1-D tokenizer, an image as K tokens (Yu et al. 2024, "An Image is Worth 32 Tokens for Reconstruction
and Generation"; bytedance/1d-tokenizer, modeling/titok.py and modules/blocks.py).

**Encoder.** 16x16 patches (a conv of stride p) plus a class token, with learned position embeddings, then K
learnable *latent tokens* with their own position embeddings appended; a pre-LN ViT over the whole sequence. Only
the K latent outputs are kept (LayerNorm, then a linear to ``token_size``: TiTok's 1x1 conv), so the decoder
never sees a patch output: z (B, token_size, K).

**Quantizer.** Any genlab quantizer on the K vectors (default TiTok's: l2-normalised VQ, 4096 codes of
dimension 12, commitment 0.25): tokens (B, K) of ids.

**Decoder.** The K quantised vectors (linear to the width, plus latent position embeddings) after a class token and
h*w *mask tokens* at the grid positions (learned position embeddings); a pre-LN ViT; the mask positions are read
back, then one of two heads:
- ``pixel`` (TiTok's ``is_legacy: False``): a linear to p*p*3 values per position, unpatchified, and a 3x3 conv;
- ``legacy`` (the two-stage recipe): TiTok's tanh MLP giving logits over the codes of a 2-D VQ *proxy*
  tokenizer (MaskGIT-VQGAN in the paper) per grid position. Pixels come from the proxy's decoder fed with the
  softmax-weighted proxy codes, as TiTok's stage 2 does; the proxy's quantizer and decoder are part of these
  weights (the ``titok-stage1`` task copies them from the teacher run).

**Training.** ``head: pixel``: the single-stage recipe (pixels directly: L1/L2 + perceptual + GAN + the quantizer
loss; keep the codebook alive with ``quantizer.dead_code_threshold``). ``head: legacy``: stage 1 (``batch
["proxy_codes"]`` (B, h, w) from the teacher: cross-entropy + the quantizer loss); with ``freeze_encoder`` stage 2
(encoder, latent tokens and quantizer frozen; decoder and proxy decoder fine-tuned on pixels).

``legacy_layout`` reproduces a quirk of TiTok's released two-stage checkpoints (``is_legacy: True``): the latent
outputs (B, K, D) are read as a (B, D, K) tensor without a transpose before the 1x1 conv. Off for models trained
here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import ConfigError, component_from_dict, to_dict
from genlab.nn.conv import Conv2d
from genlab.nn.norms import LayerNorm
from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.losses import LossConfig, TokenizerCriterion
from genlab.tokenizers.quantizers import Quantized
from genlab.tokenizers.vit import ViT, ViTConfig, unpatchify
from genlab.tokenizers.vq import resolve_quantizer


def _expand(token: Tensor, batch: int) -> Tensor:
    """(T, D) -> (B, T, D)."""
    return token.unsqueeze(0).expand(batch, -1, -1)


class TiTokEncoder(nn.Module):
    """Patches + class token + K latent tokens -> ViT -> the K latent outputs -> (B, token_size, K)."""

    def __init__(self, cfg: ViTConfig, *, patch: int, grid: int, num_tokens: int, token_size: int, legacy: bool):
        super().__init__()
        D, scale = cfg.width, cfg.width**-0.5
        self.grid, self.legacy = grid, legacy
        self.patch_embed = Conv2d(3, D, patch, stride=patch)
        self.class_embedding = nn.Parameter(scale * torch.randn(1, D))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, D))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_tokens, D))
        self.transformer = ViT(cfg)
        self.ln_post = LayerNorm(D)
        self.proj = nn.Linear(D, token_size)  # TiTok's 1x1 conv_out

    def forward(self, images: Tensor, latent_tokens: Tensor) -> Tensor:
        B = images.shape[0]
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, h*w, D)
        x = torch.cat([_expand(self.class_embedding, B).to(x.dtype), x], dim=1) + self.positional_embedding
        latents = _expand(latent_tokens + self.latent_token_positional_embedding, B).to(x.dtype)  # (B, K, D)
        x = self.transformer(torch.cat([x, latents], dim=1))  # (B, 1 + h*w + K, D)
        z = self.ln_post(x[:, 1 + self.grid**2 :])  # (B, K, D): only the latent outputs go on
        if self.legacy:  # the released checkpoints' (B, K, D) -> (B, D, K) reshape without a transpose
            z = z.reshape(B, z.shape[2], z.shape[1]).transpose(1, 2)
        return self.proj(z).transpose(1, 2)  # (B, token_size, K)


class TiTokDecoder(nn.Module):
    """K codes + class token + h*w mask tokens -> ViT -> the mask positions (B, D, h, w) -> a head."""

    def __init__(self, cfg: ViTConfig, *, grid: int, num_tokens: int, token_size: int):
        super().__init__()
        D, scale = cfg.width, cfg.width**-0.5
        self.grid = grid
        self.decoder_embed = nn.Linear(token_size, D)
        self.class_embedding = nn.Parameter(scale * torch.randn(1, D))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, D))
        self.mask_token = nn.Parameter(scale * torch.randn(1, 1, D))
        self.latent_token_positional_embedding = nn.Parameter(scale * torch.randn(num_tokens, D))
        self.transformer = ViT(cfg)
        self.ln_post = LayerNorm(D)

    def forward(self, codes: Tensor) -> Tensor:  # (B, token_size, K) -> (B, D, h, w)
        x = self.decoder_embed(codes.transpose(1, 2))  # (B, K, D)
        B, K, D = x.shape
        masks = torch.cat([_expand(self.class_embedding, B), self.mask_token.expand(B, self.grid**2, D)], dim=1)
        masks = (masks + self.positional_embedding).to(x.dtype)  # (B, 1 + h*w, D)
        x = x + self.latent_token_positional_embedding[:K]
        x = self.transformer(torch.cat([masks, x], dim=1))[:, 1 : 1 + self.grid**2]  # the mask positions
        return self.ln_post(x).transpose(1, 2).reshape(B, D, self.grid, self.grid)


class PixelHead(nn.Module):
    """(B, D, h, w) -> linear to p*p*3 per position -> unpatchify -> 3x3 conv -> (B, 3, H, W)."""

    def __init__(self, width: int, patch: int):
        super().__init__()
        self.patch = patch
        self.ffn = nn.Linear(width, patch * patch * 3)
        self.conv_out = Conv2d(3, 3, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        grid = h.shape[-1]
        x = self.ffn(h.flatten(2).transpose(1, 2))  # (B, h*w, p*p*3)
        return self.conv_out(unpatchify(x, self.patch, 3, grid))


class LegacyHead(nn.Module):
    """TiTok's two-stage head: per grid position, Linear(D, 2D) -> tanh -> Linear(2D, V): logits (B, V, h, w)."""

    def __init__(self, width: int, vocab: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, vocab))

    def forward(self, h: Tensor) -> Tensor:
        return self.ffn(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@register("tokenizer", "titok")
class TiTokTokenizer(Tokenizer):
    LOG_KEYS = ("ce", "proxy_acc")

    @dataclass
    class Config:
        patch_size: int = 16  # encoder and decoder patch side (TiTok: 16)
        num_tokens: int = 32  # K latent tokens (TiTok: 32, 64, 128)
        encoder: ViTConfig = field(default_factory=ViTConfig)  # TiTok small: 512 wide, 8 layers, 8 heads
        decoder: ViTConfig = field(default_factory=ViTConfig)
        token_size: int = 12  # channels of a token's code (the quantizer's input)
        quantizer: dict[str, Any] = field(
            default_factory=lambda: {"name": "vq", "codebook_size": 4096, "l2_norm": True, "beta": 0.25}
        )  # any registered quantizer taking one vector per token
        head: Literal["pixel", "legacy"] = "pixel"  # pixels directly, or logits over a 2-D proxy tokenizer's codes
        proxy: dict[str, Any] = field(default_factory=dict)  # legacy: the proxy's tokenizer section (vqgan)
        freeze_encoder: bool = False  # stage 2: encoder, latent tokens and quantizer frozen
        legacy_layout: bool = False  # TiTok's released checkpoints' transpose-free reshape (module docstring)
        unit_range: bool = False  # the network sees and returns images in [0, 1] (TiTok's released models)
        loss: LossConfig = field(default_factory=LossConfig)  # pixel losses (single-stage and stage 2)
        quantizers: ClassVar[tuple[str, ...]] = ("vq", "fsq", "lfq")

        def validate(self) -> None:
            self.quantizer = resolve_quantizer({"name": "vq", **self.quantizer}, self.quantizers)
            self.encoder.validate()
            self.decoder.validate()
            if min(self.patch_size, self.num_tokens, self.token_size) < 1:
                raise ValueError("patch_size, num_tokens and token_size must be positive")
            if self.head == "legacy" and self.proxy:
                self.proxy = to_dict(component_from_dict("tokenizer", dict(self.proxy), "tokenizer.proxy"))
                if self.proxy["name"] != "vqgan":
                    raise ValueError(f"tokenizer.proxy must be a vqgan tokenizer, got {self.proxy['name']!r}")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        if resolution % cfg.patch_size:
            raise TokenizerError(f"resolution {resolution} is not a multiple of patch_size {cfg.patch_size}")
        grid, K = resolution // cfg.patch_size, cfg.num_tokens
        self.grid = grid
        self.latent_tokens = nn.Parameter(cfg.encoder.width**-0.5 * torch.randn(K, cfg.encoder.width))
        self.encoder = TiTokEncoder(cfg.encoder, patch=cfg.patch_size, grid=grid, num_tokens=K,
                                    token_size=cfg.token_size, legacy=cfg.legacy_layout)  # fmt: skip
        self.quantizer = component_from_dict("quantizer", dict(cfg.quantizer), "tokenizer.quantizer").build(
            dim=cfg.token_size
        )
        self.decoder = TiTokDecoder(cfg.decoder, grid=grid, num_tokens=K, token_size=cfg.token_size)
        if cfg.head == "legacy" and not cfg.proxy:
            raise TokenizerError(
                "head: legacy needs tokenizer.proxy, the 2-D VQ tokenizer whose codes it predicts (task titok fills "
                "it in from teacher.run)"
            )
        self.proxy = self._build_proxy(resolution) if cfg.head == "legacy" else None
        if self.proxy is None:
            self.head = PixelHead(cfg.decoder.width, cfg.patch_size)
        else:
            self.head = LegacyHead(cfg.decoder.width, self.proxy.quantizer.codebook_size)
        self.token_spec = TokenSpec("discrete", (K,), vocab_size=self.quantizer.codebook_size, code_dim=cfg.token_size)
        if cfg.freeze_encoder:
            for m in (self.encoder, self.quantizer):
                m.requires_grad_(False)
            self.latent_tokens.requires_grad_(False)

    def _build_proxy(self, resolution: int) -> nn.Module:
        """The proxy tokenizer's quantizer and decoder (its encoder is the teacher's business, not TiTok's)."""
        proxy = component_from_dict("tokenizer", dict(self.cfg.proxy), "tokenizer.proxy").build(resolution=resolution)
        if proxy.grid != self.grid:
            raise TokenizerError(f"the proxy tokenizer's grid is {proxy.grid}, TiTok's decoder grid is {self.grid}")
        del proxy.encoder, proxy.quant_conv
        return proxy

    def train(self, mode: bool = True) -> TiTokTokenizer:
        super().train(mode)
        if self.cfg.freeze_encoder:  # frozen parts never update running statistics (codebook usage)
            self.encoder.eval()
            self.quantizer.eval()
        return self

    # -- the autoencoder

    def quantize(self, images: Tensor) -> Quantized:
        """Images -> Quantized with codes (B, token_size, 1, K) and indices (B, 1, K)."""
        if self.cfg.unit_range:
            images = (images + 1) / 2
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_encoder):
            z = self.encoder(images, self.latent_tokens)  # (B, token_size, K)
            return self.quantizer(z.unsqueeze(2))

    def decoder_output(self, codes: Tensor) -> Tensor:
        """Codes (B, token_size, K) (any K' <= K: the first K') -> the head's output: images, or proxy logits."""
        return self.head(self.decoder(codes))

    def proxy_pixels(self, logits: Tensor) -> Tensor:
        """Legacy head: softmax over the proxy's codes, the expected code vector per position, its decoder."""
        q = self.proxy.quantizer
        table = q.out_proj(q.embeddings())  # (V, C): each proxy code as its decoder reads it
        codes = torch.einsum("bvhw,vc->bchw", logits.float().softmax(1), table.float())
        return self.proxy.decode_codes(codes.to(logits.dtype))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Codes (B, token_size, K) -> images in [-1, 1]."""
        out = self.decoder_output(codes)
        out = out if self.proxy is None else self.proxy_pixels(out)
        return out * 2 - 1 if self.cfg.unit_range else out

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Images -> token ids (B, K)."""
        return self.quantize(images).indices.flatten(1)

    def indices_to_codes(self, tokens: Tensor) -> Tensor:
        """Ids (B, K) -> code vectors (B, token_size, K)."""
        return self.quantizer.indices_to_codes(tokens[:, None, :]).squeeze(2)

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        """Ids (B, K) -> images in [-1, 1] (TiTok's decoder is deterministic: ``seeds`` is ignored)."""
        if tokens.ndim != 2 or tokens.shape[1] != self.cfg.num_tokens:
            raise TokenizerError(f"expected token ids (B, {self.cfg.num_tokens}), got {tuple(tokens.shape)}")
        return self.decode_codes(self.indices_to_codes(tokens))

    # -- training

    def last_layer(self) -> Tensor:
        return self.head.conv_out.weight if self.proxy is None else self.proxy.last_layer()

    def training_losses(self) -> nn.Module:
        return TokenizerCriterion(self.cfg.loss)

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """Single-stage and stage 2: pixel losses (+ the quantizer's); stage 1: CE on ``batch["proxy_codes"]``."""
        images = batch["image"]
        q = self.quantize(images)
        codes = q.codes.squeeze(2)  # (B, token_size, K)
        logs = {**{f"q_{k}": v for k, v in q.terms.items()}, **q.stats}
        if self.proxy is not None and not self.cfg.freeze_encoder:
            return {**self.proxy_loss(codes, batch, q.loss), **logs}
        losses = losses if losses is not None else self.training_losses().to(images.device)
        regulariser = q.loss if not self.cfg.freeze_encoder else q.loss.detach() * 0
        return {**losses(images, self.decode_codes(codes), regulariser, step, self.last_layer()), **logs}

    def proxy_loss(self, codes: Tensor, batch: dict[str, Tensor], quantizer_loss: Tensor) -> dict[str, Tensor]:
        """TiTok stage 1: cross-entropy of the legacy head's logits against the teacher's codes (B, h, w)."""
        target = batch.get("proxy_codes")
        if target is None:
            raise TokenizerError("head: legacy trains on a teacher's codes: use task titok (teacher.run=RUN)")
        logits = self.decoder_output(codes).float()  # (B, V, h, w)
        ce = F.cross_entropy(logits, target)
        acc = (logits.argmax(1) == target).float().mean()
        loss = ce + self.cfg.loss.quantizer_weight * quantizer_loss
        return {"loss": loss, "ce": ce.detach(), "proxy_acc": acc.detach()}

    def load_proxy(self, state: dict[str, Tensor]) -> None:
        """The proxy's quantizer and decoder weights from a vqgan tokenizer's state dict (its encoder is dropped)."""
        keep = {k: v for k, v in state.items() if not k.startswith(("encoder.", "quant_conv."))}
        try:
            self.proxy.load_state_dict(keep, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"teacher: its weights do not fit tokenizer.proxy ({str(e).splitlines()[0]})") from None
