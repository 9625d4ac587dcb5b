"""FlexVAR's tokenizer (Jiao et al. 2025, jiaosiyu1999/FlexVAR): one VQ whose multi-scale tokens are **not
residual**. Scale k's map is the VQ of the latent area-downsampled to s_k x s_k (FlexVAR's
``encode_var_wo_firstL``), so every map is a whole image on its own and any one of them decodes.

Registered as tokenizer ``flexvq``: the ``vqgan`` tokenizer (conv encoder/decoder, one ``vq`` quantizer, typically
l2-normalised codes as FlexVAR's LlamaGen-style VQ) with a list of ``scales``; it trains exactly as ``vqgan`` does, at
the full latent grid (FlexVAR's own VQ also trains on multi-scale reconstructions; not done here). Its tokens are a
list of (B, s_k, s_k) maps (TokenSpec kind "multiscale"). ``decode`` reads the last map only: a map smaller than the
latent grid has its codes bicubic-upsampled to the grid (the image keeps the tokenizer's resolution), a larger one
decodes to a larger image (the decoder is convolutional). The code protocol: scale k's input to a next-scale
generator is the previous map's codes bicubic-upsampled to s_k (FlexVAR's teacher forcing and sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.registry import register
from genlab.tokenizers.base import TokenizerError, TokenSpec
from genlab.tokenizers.vq import VQGANTokenizer


def resize_codes(codes: Tensor, side: int) -> Tensor:
    """(B, C, s, s) -> (B, C, side, side), bicubic (FlexVAR's rule for codes between scales)."""
    return codes if codes.shape[-1] == side else F.interpolate(codes, size=(side, side), mode="bicubic")


@register("tokenizer", "flexvq")
class FlexVQTokenizer(VQGANTokenizer):
    KIND = "multiscale"

    @dataclass
    class Config(VQGANTokenizer.Config):
        scales: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # sides of the token maps; the last = latent side
        quantizers: ClassVar[tuple[str, ...]] = ("vq",)

        def validate(self) -> None:
            super().validate()
            if not self.scales or list(self.scales) != sorted(set(self.scales)) or self.scales[0] < 1:
                raise ValueError("scales must be increasing positive integers")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__(cfg, resolution=resolution)
        if cfg.scales[-1] != self.grid:
            raise TokenizerError(f"the last scale ({cfg.scales[-1]}) must equal the latent side {self.grid}")

    def make_token_spec(self) -> TokenSpec:
        s, e = tuple(self.cfg.scales), self.cfg.embed_dim
        return TokenSpec(self.KIND, (s[-1], s[-1]), vocab_size=self.quantizer.codebook_size, scales=s, code_dim=e)

    @torch.no_grad()
    def encode(self, images: Tensor) -> list[Tensor]:
        x = (images + 1) / 2 if self.cfg.unit_range else images  # as VQGANTokenizer.quantize
        z = self.quant_conv(self.encoder(x))  # (B, e, h, w)
        return [self.quantizer(F.interpolate(z, size=(s, s), mode="area")).indices for s in self.cfg.scales]

    def indices_to_codes(self, tokens: Any) -> Tensor:
        """A list of maps -> the last map's codes at the latent grid (or larger); one map (B, s, s) -> its codes."""
        if isinstance(tokens, (list, tuple)):
            codes = self.quantizer.indices_to_codes(tokens[-1])
            return resize_codes(codes, self.grid) if codes.shape[-1] < self.grid else codes
        return self.quantizer.indices_to_codes(tokens)

    @torch.no_grad()
    def decode(self, tokens: Any, seeds: Tensor | None = None) -> Tensor:
        return self.decode_codes(self.indices_to_codes(tokens))

    def scale_codes(self, k: int, ids: Tensor) -> Tensor:
        return self.quantizer.indices_to_codes(ids)

    def teacher_forcing_inputs(self, tokens: list[Tensor]) -> list[Tensor]:
        s = self.cfg.scales
        return [resize_codes(self.scale_codes(k, tokens[k]), s[k + 1]) for k in range(len(tokens) - 1)]

    def next_scale_input(self, k: int, f_hat: Tensor, codes: Tensor) -> tuple[Tensor, Tensor | None]:
        """Non-residual: the running latent is replaced by scale k's codes (at the grid), not added to."""
        s = self.cfg.scales
        f_hat = resize_codes(codes, self.grid)
        return f_hat, (resize_codes(codes, s[k + 1]) if k + 1 < len(s) else None)
