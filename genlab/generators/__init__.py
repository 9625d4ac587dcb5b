"""Generators: backbones (registry kind "generator") and the objectives that train them."""

# registers "dit", "maskgit", objective "flow" and refiner "flowturbo"
from genlab.generators import dit, maskgit, objectives, refiner  # noqa: F401
