"""What every continuous sampler shares: its result type, its callables and its timestep schedules.

Time convention (ARCHITECTURE.md): x_t = (1 - t) x0 + t noise, t = 1 is pure noise, dx/dt = velocity,
samplers integrate from t = 1 to t = 0. ``velocity(x, t)`` takes t as a (B,) tensor.

The contract scripts rely on: ``genlab.samplers.get(name)`` returns
``sample(velocity, noise, *, steps, generator=None, **options) -> SampleResult``. Samplers are
deterministic given the noise (``generator`` is accepted for stochastic samplers to come), so image i
depends only on its own noise, whatever the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from genlab.samplers.schedules import SCHEDULES, timesteps

Velocity = Callable[[Tensor, Tensor], Tensor]  # velocity(x (B, ...), t (B,)) -> (B, ...)
Refiner = Callable[[Tensor, Tensor, Tensor], Tensor]  # refiner(x, t, v_cached) -> velocity offset (B, ...)


@dataclass
class SampleResult:
    x: Tensor  # the sample at t = 0
    nfe: int  # network evaluations (a guided conditional + unconditional pass counts once)
    refiner_nfe: int = 0  # evaluations of a light velocity refiner (FlowTurbo), not counted in nfe


def t_like(x: Tensor, t: float) -> Tensor:
    """The time t as the (B,) tensor ``velocity`` expects."""
    return x.new_full((x.shape[0],), t)


__all__ = ["SCHEDULES", "Refiner", "SampleResult", "Velocity", "t_like", "timesteps"]
