"""Tokenizers: pixels <-> tokens. Built-ins are registered by the imports below."""

from genlab.tokenizers import encoders, flextok, flexvq, pixels, quantizers, saved, sdvae, titok, vae, vitok, vq  # noqa: F401  (registers the built-ins)
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec

__all__ = ["TokenSpec", "Tokenizer", "TokenizerError"]
