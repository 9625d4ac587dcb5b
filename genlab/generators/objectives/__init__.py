"""Objectives wrap a backbone ``f(x, t, y)``: they own ``loss`` and the callable samplers see."""

from genlab.generators.objectives import flow  # noqa: F401  (registers "flow")
