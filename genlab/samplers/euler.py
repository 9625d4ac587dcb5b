"""Euler's method for the flow ODE dx/dt = v(x, t), from t = 1 (noise) to t = 0 (data). Order 1."""

from __future__ import annotations

from torch import Tensor

from genlab.samplers.base import Callback, RandnLike, Times, Velocity, as_times, sampler, t_like


@sampler("euler")
def euler(
    velocity: Velocity, noise: Tensor, ts: Times, *, randn_like: RandnLike | None = None,
    callback: Callback | None = None,
) -> Tensor:  # fmt: skip
    """x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i); one evaluation per step."""
    ts = as_times(ts)
    x = noise
    for i, (t_cur, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        x = x + (t_next - t_cur) * velocity(x, t_like(x, t_cur))
        if callback is not None:
            callback(i, t_next, x)
    return x


@sampler("diffusers-euler")
def diffusers_euler(
    velocity: Velocity, noise: Tensor, ts: Times, *, randn_like: RandnLike | None = None,
    callback: Callback | None = None,
) -> Tensor:  # fmt: skip
    """Euler through diffusers' ``FlowMatchEulerDiscreteScheduler`` loop (genlab bench sample's peer baseline): the
    same update as ``euler``, written by another library, on the same time grid."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    ts = as_times(ts)
    sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
    sched.set_timesteps(sigmas=np.asarray(ts[:-1]), device=noise.device)
    x = noise
    for i, step_t in enumerate(sched.timesteps):
        x = sched.step(velocity(x, t_like(x, float(sched.sigmas[i]))), step_t, x).prev_sample
        if callback is not None:
            callback(i, ts[i + 1], x)
    return x
