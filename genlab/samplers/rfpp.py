"""rfpp's re-noising few-step sampler (Lee et al. 2024, "Improving the Training of Rectified Flows", its "new"
sampler): at each time t_i predict the data x̂ = x - t_i v(x, t_i), then re-noise it with the *initial* noise,
x_{i+1} = (1 - t_{i+1}) x̂ + t_{i+1} z_1, instead of stepping along v. One evaluation per step; for one step it is
Euler's step; for a perfectly straight (2-rectified) flow every step lands on the same path.
"""

from __future__ import annotations

from torch import Tensor

from genlab.registry import register
from genlab.samplers.base import Callback, RandnLike, Times, Velocity, as_times, t_like


@register("sampler", "rfpp")
def rfpp_renoise(
    velocity: Velocity, noise: Tensor, ts: Times, *, randn_like: RandnLike | None = None,
    callback: Callback | None = None,
) -> Tensor:  # fmt: skip
    """x̂_i = x_i - t_i v(x_i, t_i); x_{i+1} = (1 - t_{i+1}) x̂_i + t_{i+1} noise."""
    ts = as_times(ts)
    x = noise
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        x_hat = x - t_cur * velocity(x, t_like(x, t_cur))
        x = x_hat if t_next == 0.0 else (1 - t_next) * x_hat + t_next * noise
        if callback is not None:
            callback(i, t_next, x)
    return x
