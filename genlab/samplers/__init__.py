"""Samplers: pure functions ``sample(velocity, noise, *, steps, generator=None, **options) -> SampleResult``.

``get(name)`` returns the registered function. Samplers never import a model.
"""

from genlab import registry
from genlab.samplers import euler  # noqa: F401  (registers "euler")
from genlab.samplers.base import SampleResult, timesteps
from genlab.samplers.guidance import guided_velocity


def get(name: str):
    return registry.get("sampler", name)


__all__ = ["SampleResult", "get", "guided_velocity", "timesteps"]
