"""Generators: the contract (``base``), backbones (registry kind "generator"), the objectives that train them,
and self-contained generators of discrete tokens."""

from genlab.generators import dit, objectives, refiner  # noqa: F401  (registers "dit", "flow", refiner "flowturbo")
from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, build_generator, option

__all__ = ["Generator", "GeneratorError", "SampleOptions", "Sampled", "build_generator", "option"]
