"""Heun's method (explicit trapezoid, Karras et al. 2022 Algorithm 1 without churn) for dx/dt = v(x, t). Order 2.

The flow velocity is finite at t = 0, so unlike EDM's denoiser form the last step keeps its corrector.
"""

from __future__ import annotations

from torch import Tensor

from genlab.registry import register
from genlab.samplers.base import SampleResult, Velocity, t_like, timesteps


def heun_step(velocity: Velocity, x: Tensor, t_cur: float, t_next: float, d_cur: Tensor) -> tuple[Tensor, Tensor]:
    """One trapezoid step from (x, t_cur) with slope ``d_cur``; returns (x_next, slope at the predicted point)."""
    h = t_next - t_cur
    x_pred = x + h * d_cur  # Euler predictor
    d_pred = velocity(x_pred, t_like(x, t_next))
    return x + 0.5 * h * (d_cur + d_pred), d_pred


@register("sampler", "heun")
def heun(
    velocity: Velocity, noise: Tensor, *, steps: int, generator=None, shift: float = 1.0, schedule: str = "uniform"
) -> SampleResult:
    """x_{i+1} = x_i + h/2 (v(x_i, t_i) + v(x_i + h v(x_i, t_i), t_{i+1})); two evaluations per step."""
    ts = timesteps(steps, shift=shift, schedule=schedule).tolist()
    x = noise
    for t_cur, t_next in zip(ts[:-1], ts[1:]):
        x, _ = heun_step(velocity, x, t_cur, t_next, velocity(x, t_like(x, t_cur)))
    return SampleResult(x=x, nfe=2 * steps)
