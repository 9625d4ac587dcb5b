"""Euler's method for the flow ODE dx/dt = v(x, t), from t = 1 (noise) to t = 0 (data)."""

from __future__ import annotations

from torch import Tensor

from genlab.registry import register
from genlab.samplers.base import SampleResult, Velocity, timesteps


@register("sampler", "euler")
def euler(velocity: Velocity, noise: Tensor, *, steps: int, generator=None, shift: float = 1.0) -> SampleResult:
    """x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i); one evaluation per step."""
    ts = timesteps(steps, shift=shift).tolist()
    x = noise
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        t = x.new_full((x.shape[0],), t_cur)
        x = x + (t_next - t_cur) * velocity(x, t)
    return SampleResult(x=x, nfe=steps)
