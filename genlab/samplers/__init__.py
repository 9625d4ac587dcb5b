"""Samplers: pure functions ``sample(velocity, noise, ts, *, randn_like=None, callback=None, **options) -> x0``.

``get(name)`` returns the registered function: euler, heun, dpm++, unipc, flowturbo (which also takes ``blocks``
and ``refiner``). The time grid ``ts`` comes from ``schedules.timesteps`` and NFE from ``Counted``;
``integrate`` does both. Samplers never import a model; guidance wraps the network callable before it reaches
them.
"""

from genlab import registry
from genlab.samplers import dpm_solver, euler, flowturbo, heun, rfpp  # noqa: F401  (register the built-ins)
from genlab.samplers.base import Counted, SampleResult, integrate, timesteps
from genlab.samplers.flowturbo import Blocks
from genlab.samplers.guidance import GUIDANCE_SCHEDULES, guided
from genlab.samplers.schedules import SCHEDULES


def get(name: str):
    return registry.get("sampler", name)


def names() -> list[str]:
    return registry.names("sampler")


__all__ = [
    "GUIDANCE_SCHEDULES",
    "SCHEDULES",
    "Blocks",
    "Counted",
    "SampleResult",
    "get",
    "guided",
    "integrate",
    "names",
    "timesteps",
]
