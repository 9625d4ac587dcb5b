"""Multistep solvers in the exponential-integrator form: DPM-Solver++(2M) (ours) and UniPC (diffusers').

Flow as a diffusion: alpha_t = 1 - t, sigma_t = t, half log-SNR lambda_t = log(alpha_t / sigma_t), data prediction
x0_hat = x - t v(x, t).

- ``dpm++``: DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), our own implementation. diffusers'
  ``DPMSolverMultistepScheduler`` (0.42) supports flow prediction but falls short for genlab: its
  ``set_timesteps`` takes no custom sigmas, so it only runs its own flow schedule, which starts at t = 0.999 instead
  of 1 (an error floor of ~1e-3 on the analytic flow, see tests/test_samplers.py). The test suite checks that
  this implementation equals diffusers' step for step on diffusers' own schedule.
- ``unipc``: UniPC-bh2, order 2 (Zhao et al. 2023), through diffusers' ``UniPCMultistepScheduler`` with flow sigmas,
  which does accept genlab's schedules (``set_timesteps(sigmas=...)``; it nudges t = 1 to 1 - 1e-6 to keep
  log(alpha) finite). Its corrector reuses the next step's evaluation, so it costs one evaluation per step.
"""

from __future__ import annotations

import math

from torch import Tensor

from genlab.samplers.base import Callback, RandnLike, Times, Velocity, as_times, sampler, t_like


def _lambda(t: float) -> float:
    """Half log-SNR log((1 - t) / t); -inf at pure noise, +inf at data."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log((1 - t) / t)


@sampler("dpm++")
def dpm_solver_pp(
    velocity: Velocity, noise: Tensor, ts: Times, *, randn_like: RandnLike | None = None,
    callback: Callback | None = None,
) -> Tensor:  # fmt: skip
    """DPM-Solver++(2M), one evaluation per step:

    x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i,  h_i = lambda_{i+1} - lambda_i,
    D_i = (1 + 1 / (2 r_i)) x0_i - 1 / (2 r_i) x0_{i-1},  r_i = h_{i-1} / h_i;

    first order (D_i = x0_i, i.e. DDIM, which for this flow is an Euler step) at the first step and at the last
    step into t = 0, where h is infinite (diffusers' ``lower_order_final`` with ``final_sigmas_type="zero"``).
    """
    return dpm_pp_2m(velocity, noise, as_times(ts), callback)


def dpm_pp_2m(velocity: Velocity, noise: Tensor, ts: list[float], callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M) through the decreasing times ``ts`` (ending at 0 or above it)."""
    x, x0_prev, h_prev = noise, None, math.inf
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x0 = x - t * velocity(x, t_like(x, t))  # data prediction
        if s == 0.0:
            if callback is not None:
                callback(i, s, x0)
            return x0
        h = _lambda(s) - _lambda(t)
        d = x0
        if x0_prev is not None and math.isfinite(h_prev):
            half_inv_r = h / (2 * h_prev)
            d = (1 + half_inv_r) * x0 - half_inv_r * x0_prev
        x = (s / t) * x - (1 - s) * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
        if callback is not None:
            callback(i, s, x)
    return x


@sampler("unipc")
def unipc(
    velocity: Velocity, noise: Tensor, ts: Times, *, randn_like: RandnLike | None = None,
    callback: Callback | None = None,
) -> Tensor:  # fmt: skip
    """UniPC-bh2 (predictor UniP-2 + corrector UniC), diffusers' scheduler on genlab's time grid."""
    import torch
    from diffusers import UniPCMultistepScheduler

    ts = torch.as_tensor(as_times(ts), dtype=torch.float64)
    sched = UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=1.0, solver_order=2, solver_type="bh2"
    )
    sched.set_timesteps(sigmas=ts[:-1].numpy(), device=noise.device)
    x = noise
    for i, (t, step_t) in enumerate(zip(ts[:-1].tolist(), sched.timesteps)):
        x = sched.step(velocity(x, t_like(x, t)), step_t, x).prev_sample
        if callback is not None:
            callback(i, ts[i + 1].item(), x)
    return x
