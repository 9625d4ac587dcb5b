"""Heun's method (explicit trapezoid, Karras et al. 2022 Algorithm 1 without churn) for dx/dt = v(x, t). Order 2.

As in EDM's Algorithm 1, the last step (to t = 0) is an Euler step by default (``last_step="euler"``,
2 * steps - 1 evaluations): the corrector there would evaluate the network at the data end, where trajectories
bend most and a model trained with logit-normal times has seen almost no samples. Measured on the quickstart
model (FID of 256 samples, cfg 3): 4 Heun steps 190.8 with that corrector (8 NFE) and 150.9 without it (7 NFE),
Euler at 8 NFE 145.6. ``last_step="heun"`` keeps the corrector (the textbook method, 2 * steps evaluations).
The global order stays 2: one Euler step adds an O(h^2) error.
"""

from __future__ import annotations

from torch import Tensor

from genlab.samplers.base import Callback, RandnLike, Times, Velocity, as_times, sampler, t_like


def heun_step(velocity: Velocity, x: Tensor, t_cur: float, t_next: float, d_cur: Tensor) -> tuple[Tensor, Tensor]:
    """One trapezoid step from (x, t_cur) with slope ``d_cur``; returns (x_next, slope at the predicted point)."""
    h = t_next - t_cur
    x_pred = x + h * d_cur  # Euler predictor
    d_pred = velocity(x_pred, t_like(x, t_next))
    return x + 0.5 * h * (d_cur + d_pred), d_pred


LAST_STEPS = ("euler", "heun")


def check_last_step(last_step: str) -> bool:
    """True when the last step is an Euler step; a clear error for anything but ``LAST_STEPS``."""
    if last_step not in LAST_STEPS:
        raise ValueError(f"last_step must be one of {', '.join(LAST_STEPS)}, got {last_step!r}")
    return last_step == "euler"


@sampler("heun")
def heun(
    velocity: Velocity,
    noise: Tensor,
    ts: Times,
    *,
    randn_like: RandnLike | None = None,
    callback: Callback | None = None,
    last_step: str = "euler",
) -> Tensor:
    """x_{i+1} = x_i + h/2 (v(x_i, t_i) + v(x_i + h v(x_i, t_i), t_{i+1})); two evaluations per step, one in the
    last step unless ``last_step="heun"``."""
    euler_last = check_last_step(last_step)
    ts = as_times(ts)
    steps, x = len(ts) - 1, noise
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        d = velocity(x, t_like(x, t_cur))
        if euler_last and i == steps - 1:
            x = x + (t_next - t_cur) * d
        else:
            x, _ = heun_step(velocity, x, t_cur, t_next, d)
        if callback is not None:
            callback(i, t_next, x)
    return x
