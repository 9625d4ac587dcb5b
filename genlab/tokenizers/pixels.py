"""The identity tokenizer: generators train on pixels, optionally space-to-depth patched and scaled."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec


@register("tokenizer", "pixels")
class PixelTokenizer(Tokenizer):
    trainable = False

    @dataclass
    class Config:
        patch: int = 1  # space-to-depth factor: (3, H, W) -> (3*p*p, H/p, W/p)
        scale: float = 1.0  # tokens = scale * pixels (pixels in [-1, 1])

        def validate(self) -> None:
            if self.patch <= 0 or self.scale <= 0:
                raise ValueError("patch and scale must be positive")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        if resolution % cfg.patch:
            raise TokenizerError(f"resolution {resolution} is not divisible by tokenizer.patch={cfg.patch}")
        self.cfg = cfg
        p = cfg.patch
        self.token_spec = TokenSpec("continuous", (3 * p * p, resolution // p, resolution // p))

    def encode(self, images: Tensor) -> Tensor:
        x = F.pixel_unshuffle(images, self.cfg.patch) if self.cfg.patch > 1 else images
        return x * self.cfg.scale

    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        x = tokens / self.cfg.scale
        return F.pixel_shuffle(x, self.cfg.patch) if self.cfg.patch > 1 else x
