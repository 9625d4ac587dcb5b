"""Tokenizers: pixels <-> tokens. Built-ins are registered by the imports below."""

from genlab.tokenizers import pixels, quantizers, sdvae  # noqa: F401  (registers "pixels", "sd-vae", quantizers)
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec

__all__ = ["TokenSpec", "Tokenizer", "TokenizerError"]
