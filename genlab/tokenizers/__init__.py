"""Tokenizers: pixels <-> tokens. Built-ins are registered by the imports below."""

from genlab.tokenizers import (  # noqa: F401  (registers the built-ins)
    encoders,
    flextok,
    flexvq,
    omnitok,
    pixels,
    quantizers,
    saved,
    sdvae,
    titok,
    vae,
    vitok,
    vq,
)
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec

__all__ = ["TokenSpec", "Tokenizer", "TokenizerError"]
