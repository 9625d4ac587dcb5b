"""Samplers: pure functions ``sample(velocity, noise, *, steps, generator=None, **options) -> SampleResult``.

``get(name)`` returns the registered function: euler, heun, dpm++, unipc, flowturbo. Every one takes
``schedule`` (see ``schedules.SCHEDULES``) and ``shift``; flowturbo also ``blocks`` and ``refiner``.
Samplers never import a model; guidance wraps the network callable before it reaches them.
"""

from genlab import registry
from genlab.samplers import dpm_solver, euler, flowturbo, heun  # noqa: F401  (register the built-ins)
from genlab.samplers.base import SampleResult, timesteps
from genlab.samplers.flowturbo import Blocks
from genlab.samplers.guidance import GUIDANCE_SCHEDULES, guided, guided_velocity
from genlab.samplers.schedules import SCHEDULES


def get(name: str):
    return registry.get("sampler", name)


def names() -> list[str]:
    return registry.names("sampler")


__all__ = [
    "GUIDANCE_SCHEDULES",
    "SCHEDULES",
    "Blocks",
    "SampleResult",
    "get",
    "guided",
    "guided_velocity",
    "names",
    "timesteps",
]
