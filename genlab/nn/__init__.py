"""Layers every model family shares: attention, embeddings, modulation, per-sample randomness."""

from genlab.nn.attention import Attention, Mlp
from genlab.nn.embeddings import LabelEmbedder, TimestepEmbedder, sincos_pos_embed_2d
from genlab.nn.rng import per_sample_rand, per_sample_randn, sample_seeds

__all__ = [
    "Attention",
    "LabelEmbedder",
    "Mlp",
    "TimestepEmbedder",
    "per_sample_rand",
    "per_sample_randn",
    "sample_seeds",
    "sincos_pos_embed_2d",
]
