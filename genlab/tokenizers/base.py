"""The Tokenizer contract: pixels <-> tokens.

Every tokenizer is an ``nn.Module`` with a typed ``Config``, a ``token_spec`` saying what its
tokens look like, ``encode(images) -> tokens`` and ``decode(tokens) -> images`` (images in
[-1, 1]), and ``loss(batch, step) -> dict`` when it can be trained. Generators read only
``token_spec``; they never import a concrete tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn


class TokenizerError(RuntimeError):
    """A tokenizer that cannot be built or loaded (e.g. weights missing offline)."""


@dataclass(frozen=True)
class TokenSpec:
    """What a tokenizer's tokens look like, per sample (batch dimension excluded)."""

    kind: Literal["continuous", "discrete", "multiscale", "residual"]
    # continuous: (C, h, w); discrete: (N,) or (h, w); residual: (h, w, depth); multiscale: the last map's (h, w)
    shape: tuple[int, ...]
    vocab_size: int = 0  # discrete kinds: codebook size
    scales: tuple[int, ...] = ()  # multiscale: side of each scale's token map, coarse to fine
    variable_length: bool = False  # 1-D tokenizers that can decode from a prefix (FlexTok-style)
    code_dim: int = 0  # discrete kinds: channels of a token's code vector (what indices_to_codes returns)

    @property
    def channels(self) -> int:
        return self.shape[0] if self.kind == "continuous" else 0

    @property
    def size(self) -> int:
        """Spatial side of a continuous token grid."""
        return self.shape[-1]


class Tokenizer(nn.Module):
    """Base class: subclasses set ``Config`` and ``token_spec`` and implement encode/decode."""

    Config: Any
    token_spec: TokenSpec
    trainable: bool = True  # False for fixed transforms (pixels) and frozen pretrained models
    LOG_KEYS: tuple[str, ...] = ()  # scalar outputs of ``loss`` logged while training, besides the shared ones

    def encode(self, images: Tensor) -> Any:
        raise NotImplementedError

    def decode(self, tokens: Any) -> Tensor:
        raise NotImplementedError

    def roundtrip(self, images: Tensor) -> Tensor:
        """Images -> reconstructions, for previews and reconstruction metrics. Continuous tokenizers with latent
        statistics override it so that it works before the statistics are fitted."""
        return self.decode(self.encode(images))

    def training_losses(self) -> nn.Module | None:
        """Modules training needs besides the tokenizer (perceptual net, discriminator), kept out of its weights.
        A module with a ``discriminator`` gets a second optimizer in the trainer."""
        return None

    def loss(self, batch: dict[str, Tensor], step: int, losses: nn.Module | None = None) -> dict[str, Tensor]:
        """Training losses at optimizer step ``step``: "loss" (and "discriminator_loss" with a discriminator);
        ``losses`` is what ``training_losses()`` built."""
        raise TokenizerError(f"{type(self).__name__} has nothing to train")
