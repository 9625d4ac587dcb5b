"""What every continuous sampler shares: the signature, NFE counting and the time grid.

Time convention (ARCHITECTURE.md): x_t = (1 - t) x0 + t noise, t = 1 is pure noise, dx/dt = velocity,
samplers integrate from t = 1 to t = 0. ``velocity(x, t)`` takes t as a (B,) tensor.

The contract (k-diffusion/EDM style): a sampler is a registered pure function

    sample(velocity, noise, ts, *, randn_like=None, callback=None, **method_options) -> x0

- ``ts``: the time grid, decreasing from 1 to 0 (``schedules.timesteps``); the method never builds it;
- ``randn_like(x)``: per-sample Gaussian noise for stochastic samplers, drawn from each image's own seed (EDM2's
  ``randn_like``), so image i keeps seed i whatever the batch; deterministic samplers ignore it;
- ``callback(i, t, x)``: called after step i with the state at time ``t``.

NFE is counted by wrapping ``velocity`` (``Counted``), never by a formula per sampler: ``integrate`` does both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from genlab.registry import get
from genlab.samplers.schedules import SCHEDULES, timesteps

Velocity = Callable[[Tensor, Tensor], Tensor]  # velocity(x (B, ...), t (B,)) -> (B, ...)
Refiner = Callable[[Tensor, Tensor, Tensor], Tensor]  # refiner(x, t, v_cached) -> velocity offset (B, ...)
RandnLike = Callable[[Tensor], Tensor]
Callback = Callable[[int, float, Tensor], None]
Times = Sequence[float] | Tensor


@dataclass
class SampleResult:
    x: Tensor  # the sample at t = 0
    nfe: int  # network evaluations (a guided conditional + unconditional pass counts once)
    refiner_nfe: int = 0  # evaluations of a light velocity refiner (FlowTurbo), not counted in nfe


class Counted:
    """A callable that counts its calls: the NFE of whatever sampler called it."""

    def __init__(self, fn: Callable[..., Tensor]):
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Tensor) -> Tensor:
        self.calls += 1
        return self.fn(*args)


def t_like(x: Tensor, t: float) -> Tensor:
    """The time t as the (B,) tensor ``velocity`` expects."""
    return x.new_full((x.shape[0],), t)


def as_times(ts: Times) -> list[float]:
    return ts.tolist() if isinstance(ts, Tensor) else [float(t) for t in ts]


def integrate(
    sampler: str | Callable[..., Tensor],
    velocity: Velocity,
    noise: Tensor,
    *,
    steps: int,
    shift: float = 1.0,
    schedule: str = "uniform",
    refiner: Refiner | None = None,
    randn_like: RandnLike | None = None,
    callback: Callback | None = None,
    **method_options,
) -> SampleResult:
    """Build the time grid, run ``sampler`` on a counted velocity (and refiner), return x0 and the counts."""
    sample = get("sampler", sampler) if isinstance(sampler, str) else sampler
    ts = timesteps(steps, shift=shift, schedule=schedule)
    v = Counted(velocity)
    if refiner is not None:
        method_options["refiner"] = r = Counted(refiner)
    x = sample(v, noise, ts, randn_like=randn_like, callback=callback, **method_options)
    return SampleResult(x=x, nfe=v.calls, refiner_nfe=r.calls if refiner is not None else 0)


__all__ = ["SCHEDULES", "Counted", "Refiner", "SampleResult", "Velocity", "integrate", "t_like", "timesteps"]
