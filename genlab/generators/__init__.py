"""Generators: the contract (``base``), backbones (registry kind "generator") and the objectives that train them,
and self-contained generators of discrete tokens (MaskGIT)."""

from genlab.generators import dit, maskgit, objectives, refiner  # noqa: F401  (register "dit", "maskgit", "flow", ...)
from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, build_generator, option

__all__ = ["Generator", "GeneratorError", "SampleOptions", "Sampled", "build_generator", "option"]
