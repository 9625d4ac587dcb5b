"""Flows with known velocity fields, for testing samplers (x_t = (1 - t) x0 + t eps, dx/dt = v)."""

from __future__ import annotations

import torch
from torch import Tensor

MU, S = 2.0, 0.5  # Gaussian data N(MU, S^2); noise N(0, 1)

# a 2-D mixture of three isotropic Gaussians: weights, means (K, 2), standard deviations
MIX_W = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MIX_MU = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [-0.5, -2.0]], dtype=torch.float64)
MIX_S = torch.tensor([0.4, 0.6, 0.5], dtype=torch.float64)


def _tb(t: Tensor, x: Tensor) -> Tensor:
    return t.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def gaussian_velocity(x: Tensor, t: Tensor) -> Tensor:
    """Exact velocity E[eps - x0 | x_t = x] for x0 ~ N(MU, S^2) (any shape: independent coordinates)."""
    t = _tb(t, x)
    var = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) / var * (x - (1 - t) * MU)


def gaussian_exact(noise: Tensor) -> Tensor:
    """Where the ODE takes the noise: the transport map eps -> MU + S eps."""
    return MU + S * noise


def mixture_velocity(x: Tensor, t: Tensor) -> Tensor:
    """Exact velocity for the 2-D mixture: the posterior-weighted per-component Gaussian velocities. x (B, 2)."""
    t = t.view(-1, 1, 1).to(x.dtype)  # (B, 1, 1)
    mu, s2 = MIX_MU.to(x)[None], (MIX_S.to(x) ** 2)[None, :, None]  # (1, K, 2), (1, K, 1)
    var = (1 - t) ** 2 * s2 + t**2  # (B, K, 1)
    diff = x[:, None] - (1 - t) * mu  # (B, K, 2)
    logp = torch.log(MIX_W.to(x))[None] - (diff**2).sum(-1) / (2 * var[..., 0]) - torch.log(var[..., 0])  # (B, K)
    w = torch.softmax(logp, dim=1)[..., None]  # (B, K, 1)
    v_k = -mu + (t - (1 - t) * s2) / var * diff  # (B, K, 2)
    return (w * v_k).sum(1)


def rk4(velocity, noise: Tensor, steps: int = 1024) -> Tensor:
    """A fine reference solution (classical Runge-Kutta, uniform steps from t = 1 to 0)."""
    x, h = noise, -1.0 / steps

    def tt(s: float) -> Tensor:
        return noise.new_full((noise.shape[0],), s)

    for i in range(steps):
        t = 1.0 - i / steps
        k1 = velocity(x, tt(t))
        k2 = velocity(x + h / 2 * k1, tt(t + h / 2))
        k3 = velocity(x + h / 2 * k2, tt(t + h / 2))
        k4 = velocity(x + h * k3, tt(t + h))
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
