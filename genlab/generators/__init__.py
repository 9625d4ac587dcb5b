"""Generators: backbones (registry kind "generator") and the objectives that train them."""

from genlab.generators import dit, gpt, objectives, refiner  # noqa: F401  (registers "dit", "gpt", "flow", refiner "flowturbo")
