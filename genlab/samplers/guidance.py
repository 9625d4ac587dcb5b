"""Classifier-free guidance as a wrapper around the network callable (Ho & Salimans 2022).

v = v_uncond + w(t) (v_cond - v_uncond), the conditional and unconditional passes batched in one forward;
optionally only on the first ``channels`` channels (DiT's published 3-channel behaviour), only for t inside
``interval`` = [t_lo, t_hi] (Kynkaenniemi et al. 2024, "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality"), and with a scale that follows a ``schedule`` over time:

    w(t) = 1 + (scale - 1) g(t),  g = 1 (constant), 1 - t (linear), (1 - cos(pi (1 - t))) / 2 (cosine),

so "linear" and "cosine" ramp from no guidance at pure noise (t = 1) to ``scale`` at the data (t = 0), as in
MUSE/MDT's guidance schedules; a callable ``g(t) -> (B,) tensor`` works too. An interval with t_lo > t_hi is empty.
Outside the interval (or with scale 1) only the conditional pass runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

Network = Callable[..., Tensor]  # f(x, t, labels, *extra) -> (B, C, H, W)
GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")
_EPS = 1e-6


def _ramp(schedule: str | Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    if callable(schedule):
        return schedule
    if schedule == "constant":
        return torch.ones_like
    if schedule == "linear":
        return lambda t: 1 - t
    if schedule == "cosine":
        return lambda t: (1 - torch.cos(math.pi * (1 - t))) / 2
    raise ValueError(f"unknown guidance schedule {schedule!r}; schedules: {', '.join(GUIDANCE_SCHEDULES)}")


def guided(
    net: Network,
    labels: Tensor,
    null_label: int,
    scale: float = 1.0,
    *,
    channels: int = 0,
    interval: tuple[float, float] = (0.0, 1.0),
    schedule: str | Callable[[Tensor], Tensor] = "constant",
) -> Callable[..., Tensor]:
    """``fn(x, t, *extra)``: the guided ``net(x, t, labels, *extra)``; extra tensors (a refiner's cached velocity)
    are duplicated for the unconditional half. ``scale == 1`` runs the conditional pass alone."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    lo, hi = interval
    ramp = _ramp(schedule)
    null = torch.full_like(labels, null_label)

    def fn(x: Tensor, t: Tensor, *extra: Tensor) -> Tensor:
        inside = (t >= lo - _EPS) & (t <= hi + _EPS)  # (B,); the tolerance absorbs t's float32 rounding
        if scale == 1.0 or not bool(inside.any()):
            return net(x, t, labels, *extra)
        both = [torch.cat([e, e]) for e in (x, t, *extra)]
        cond, uncond = net(both[0], both[1], torch.cat([labels, null]), *both[2:]).chunk(2)  # (B, C, H, W) each
        w = 1 + (scale - 1) * ramp(t.float()).to(cond.dtype)  # (B,)
        w = torch.where(inside, w, torch.ones_like(w)).view(-1, *([1] * (cond.ndim - 1)))
        out = uncond + w * (cond - uncond)
        if channels:
            out = torch.cat([out[:, :channels], cond[:, channels:]], dim=1)
        return out

    return fn
