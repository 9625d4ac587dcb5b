"""Samplers: pure functions ``sample(velocity, noise, ts, *, randn_like=None, callback=None, **options) -> x0``.

``get(name)`` returns the registered function: euler, heun, dpm++, unipc, flowturbo (which also takes an optional
``refiner`` network and its own option ``blocks``). Each declares its networks and options (``base.sampler``);
``option_classes()`` are the options of the registered ones, which a flow objective's SampleOptions includes. The
time grid ``ts`` comes from ``schedules.timesteps`` and NFE from ``Counted``; ``integrate`` does both. Samplers
never import a model; guidance wraps the network callable before it reaches them.
"""

from genlab import registry
from genlab.samplers import dpm_solver, euler, flowturbo, heun, rfpp  # noqa: F401  (register the built-ins)
from genlab.samplers.base import Counted, SampleResult, declared_networks, integrate, option_names, sampler, timesteps
from genlab.samplers.flowturbo import Blocks
from genlab.samplers.guidance import GUIDANCE_SCHEDULES, guided
from genlab.samplers.schedules import SCHEDULES


def get(name: str):
    return registry.get("sampler", name)


def names() -> list[str]:
    return registry.names("sampler")


def option_classes() -> tuple[type, ...]:
    """The options dataclasses of the samplers registered so far that have options (at least the built-ins)."""
    found = (getattr(fn, "Options", None) for fn in registry.registered("sampler").values())
    return tuple(dict.fromkeys(c for c in found if c is not None))


__all__ = [
    "GUIDANCE_SCHEDULES",
    "SCHEDULES",
    "Blocks",
    "Counted",
    "SampleResult",
    "get",
    "guided",
    "declared_networks",
    "integrate",
    "names",
    "option_classes",
    "option_names",
    "sampler",
    "timesteps",
]
