"""Generators: the contract (``base``), backbones (registry kind "generator") and the objectives that train them,
and self-contained generators of discrete tokens (MaskGIT, GPT, VAR, FlexVAR)."""

from genlab.generators import dimr, dit, enat, flexvar, gpt, lamamba, maskgit, objectives, refiner, resgen, var  # noqa: F401
from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, build_generator, option

__all__ = ["Generator", "GeneratorError", "SampleOptions", "Sampled", "build_generator", "option"]
