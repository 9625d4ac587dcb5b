"""Timestep schedules: ``steps + 1`` times from t = 1 (noise) down to t = 0 (data).

Separate from the samplers (any sampler runs on any schedule). ARCHITECTURE.md's convention:
x_t = (1 - t) x0 + t noise, so t is also the flow's noise level ("sigma" in diffusers' flow schedulers).

- ``uniform``: t_i = 1 - i / N.
- ``logit_normal``: t_i = sigmoid(m + s Phi^-1(1 - i / N)), the quantiles of the logit-normal timestep
  density that SD3 (Esser et al. 2024) trains with, so steps are dense where training was.
- ``edm``: Karras et al. 2022 (EDM) eq. 5, rho = 7, in the noise-to-signal ratio sigma = t / (1 - t), from
  sigma_max = 80 to sigma_min = 0.002 (t = 0.988 .. 0.002), then t = 0; the first time is moved to t = 1 so the
  sampler starts from pure noise.
- any of them with ``shift`` s != 1: t' = s t / (1 + (s - 1) t) (SD3/FLUX resolution shift; s > 1 spends more steps
  at high noise). ``uniform`` with a shift is the "shifted" schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("uniform", "logit_normal", "edm")
EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO = 0.002, 80.0, 7.0


def _uniform(steps: int) -> Tensor:
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def _logit_normal(steps: int, mean: float = 0.0, std: float = 1.0) -> Tensor:
    u = _uniform(steps)
    inner = torch.sigmoid(mean + std * torch.special.ndtri(u[1:-1]))  # quantiles strictly inside (0, 1)
    return torch.cat([u[:1], inner, u[-1:]])


def _edm(steps: int) -> Tensor:
    if steps == 1:
        return _uniform(1)
    i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    lo, hi = EDM_SIGMA_MIN ** (1 / EDM_RHO), EDM_SIGMA_MAX ** (1 / EDM_RHO)
    sigma = (hi + i * (lo - hi)) ** EDM_RHO  # (steps,) from sigma_max down to sigma_min
    t = sigma / (1 + sigma)
    t[0] = 1.0
    return torch.cat([t, t.new_zeros(1)])


def shift_time(t: Tensor, shift: float) -> Tensor:
    """t' = s t / (1 + (s - 1) t): the SD3/FLUX shift, in genlab's convention (t = 1 noise; s > 1 moves t to noise).

    In the convention where t = 1 is data (SiT, LightningDiT), the same formula with s is this one with 1 / s."""
    return shift * t / (1 + (shift - 1) * t)


def timesteps(steps: int, *, shift: float = 1.0, schedule: str = "uniform", device=None) -> Tensor:
    """``steps + 1`` float64 times, strictly decreasing from 1 to 0."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not (shift > 0 and math.isfinite(shift)):
        raise ValueError(f"shift must be a positive number, got {shift}")
    if schedule == "uniform":
        t = _uniform(steps)
    elif schedule == "logit_normal":
        t = _logit_normal(steps)
    elif schedule == "edm":
        t = _edm(steps)
    else:
        raise ValueError(f"unknown schedule {schedule!r}; schedules: {', '.join(SCHEDULES)}")
    if shift != 1.0:
        t = shift_time(t, shift)
    return t.to(device) if device is not None else t
