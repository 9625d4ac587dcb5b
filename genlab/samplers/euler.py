"""Euler's method for the flow ODE dx/dt = v(x, t), from t = 1 (noise) to t = 0 (data). Order 1."""

from __future__ import annotations

from torch import Tensor

from genlab.registry import register
from genlab.samplers.base import SampleResult, Velocity, t_like, timesteps


@register("sampler", "euler")
def euler(
    velocity: Velocity, noise: Tensor, *, steps: int, generator=None, shift: float = 1.0, schedule: str = "uniform"
) -> SampleResult:
    """x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i); one evaluation per step."""
    ts = timesteps(steps, shift=shift, schedule=schedule).tolist()
    x = noise
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t_cur) * velocity(x, t_like(x, t_cur))
    return SampleResult(x=x, nfe=steps)
