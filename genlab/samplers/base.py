"""What every continuous sampler shares: its result type and its timestep schedules.

Time convention (ARCHITECTURE.md): x_t = (1 - t) x0 + t noise, t = 1 is pure noise, dx/dt = velocity,
samplers integrate from t = 1 to t = 0. ``velocity(x, t)`` takes t as a (B,) tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Velocity = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SampleResult:
    x: Tensor  # the sample at t = 0
    nfe: int  # network evaluations (a guided conditional + unconditional pass counts once)


def timesteps(steps: int, *, shift: float = 1.0, device=None) -> Tensor:
    """``steps + 1`` times from 1 to 0, uniform, optionally shifted: t' = s t / (1 + (s - 1) t)
    (SD3/FLUX resolution shift; s > 1 spends more steps at high noise)."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device=device)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t
