"""Classifier-free guidance as a wrapper around the network callable (Ho & Salimans 2022).

v = v_uncond + s (v_cond - v_uncond), the conditional and unconditional passes batched in one
forward; optionally only on the first ``channels`` channels (DiT's published 3-channel behaviour)
and only for t inside ``interval`` (Kynkäänniemi et al. 2024's guidance interval).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from genlab.samplers.base import Velocity

Network = Callable[[Tensor, Tensor, Tensor], Tensor]  # f(x, t, labels)


def guided_velocity(
    net: Network,
    labels: Tensor,
    null_label: int,
    scale: float = 1.0,
    *,
    channels: int = 0,
    interval: tuple[float, float] = (0.0, 1.0),
) -> Velocity:
    """A ``velocity(x, t)`` for samplers. ``scale == 1`` runs the conditional pass alone."""
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    lo, hi = interval
    null = torch.full_like(labels, null_label)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        active = scale != 1.0 and lo <= float(t[0]) <= hi
        if not active:
            return net(x, t, labels)
        out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))  # (2B, C, H, W)
        cond, uncond = out.chunk(2)
        guided = uncond + scale * (cond - uncond)
        if channels:
            guided = torch.cat([guided[:, :channels], cond[:, channels:]], dim=1)
        return guided

    return velocity
