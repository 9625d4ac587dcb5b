"""Layers every model family shares: attention, feed-forwards, norms, RoPE, embeddings, per-sample randomness."""

from genlab.nn.attention import Attention, Mlp, SwiGLU
from genlab.nn.embeddings import LabelEmbedder, TimestepEmbedder, sincos_pos_embed_2d
from genlab.nn.norms import NORMS, LayerNorm, RMSNorm, TDNorm, TimeDependentParameter, make_norm
from genlab.nn.rng import per_sample_rand, per_sample_randn, sample_seeds
from genlab.nn.rope import apply_rope, rope_1d, rope_2d, rope_3d

__all__ = [
    "NORMS",
    "Attention",
    "LabelEmbedder",
    "LayerNorm",
    "Mlp",
    "RMSNorm",
    "SwiGLU",
    "TDNorm",
    "TimeDependentParameter",
    "TimestepEmbedder",
    "apply_rope",
    "make_norm",
    "per_sample_rand",
    "per_sample_randn",
    "rope_1d",
    "rope_2d",
    "rope_3d",
    "sample_seeds",
    "sincos_pos_embed_2d",
]
