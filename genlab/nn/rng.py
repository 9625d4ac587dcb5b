"""Per-sample randomness: sample i's noise depends only on its own seed.

This is what makes a sample independent of the batch size and of how a global batch is
split across processes (training on 1 or 2 processes draws the same noise per sample).
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK = (1 << 63) - 1


def _mix(*parts: int) -> int:
    """A 63-bit integer hash of integers (splitmix64 steps), stable across runs and machines."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & _MASK


def sample_seeds(seed: int, step: int, positions: Tensor | range) -> Tensor:
    """Seeds (B,) for training samples at ``positions`` of the global batch at ``step``."""
    return torch.tensor([_mix(seed, step, int(p)) for p in positions], dtype=torch.long)


def _generate(seeds: Tensor, stream: int, shape: tuple[int, ...], fn, device, dtype) -> Tensor:
    g = torch.Generator()
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, s in enumerate(seeds.tolist()):
        g.manual_seed(_mix(s, stream))
        fn(shape, generator=g, out=out[i])
    return out.to(device=device, dtype=dtype, non_blocking=True)


def per_sample_randn(
    seeds: Tensor, shape: tuple[int, ...], *, stream: int = 0, device=None, dtype=torch.float32
) -> Tensor:
    """Standard normal (B, *shape); row i drawn from seed i (and ``stream``, for independent draws)."""
    return _generate(seeds, stream, tuple(shape), torch.randn, device, dtype)


def per_sample_rand(
    seeds: Tensor, shape: tuple[int, ...] = (), *, stream: int = 0, device=None, dtype=torch.float32
) -> Tensor:
    """Uniform [0, 1) (B, *shape); row i drawn from seed i (and ``stream``)."""
    return _generate(seeds, stream, tuple(shape), torch.rand, device, dtype)
