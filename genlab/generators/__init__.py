"""Generators: backbones (registry kind "generator") and the objectives that train them."""

from genlab.generators import dit, flexvar, objectives, refiner, var  # noqa: F401  (registers dit, flow, var, flexvar, flowturbo)
