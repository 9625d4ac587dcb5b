"""What every evaluator shares: the error type, extracted features and reference statistics.

Statistics are float64 (torch-fidelity issue #43: in float32 the FID of two draws of the same
distribution depends on the batch size); features stay float32, as the network produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


class EvalError(RuntimeError):
    """An evaluation that cannot run (missing reference or weights, bad images); the message says what to do."""


@dataclass
class Features:
    """What the feature network saw of one image set."""

    pool: Tensor  # (N, 2048) float32 pool3 features (FID, KID, precision/recall)
    logits: Tensor | None  # (N, 1008) float32 unbiased logits (Inception Score); None when the network has none
    feature_net: str  # which network produced them (FeatureNet.name)

    @property
    def n(self) -> int:
        return self.pool.shape[0]


def gaussian_stats(pool: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), computed in float64."""
    x = torch.as_tensor(pool).to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise EvalError(f"need at least 2 images for statistics, got features of shape {tuple(x.shape)}")
    mu = x.mean(0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)  # (D, D)
    return mu.numpy(), sigma.numpy()


@dataclass
class Reference:
    """Reference statistics: mu, sigma (float64) and the features KID/PR need (float32, maybe a subset)."""

    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    n: int  # images the statistics were computed on
    feature_net: str
    features: np.ndarray | None = None  # (M, D) float32; None for an ADM batch whose images were not featurised
    meta: dict = field(default_factory=dict)  # dataset, resolution, split, source, ...

    @classmethod
    def from_features(cls, feats: Features, meta: dict | None = None) -> Reference:
        mu, sigma = gaussian_stats(feats.pool)
        return cls(mu, sigma, feats.n, feats.feature_net, feats.pool.numpy().astype(np.float32), dict(meta or {}))
