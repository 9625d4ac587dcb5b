"""Objectives wrap a backbone ``f(x, t, y)``: they own ``loss`` and the callable samplers see."""

from genlab.generators.objectives import ddpm, flow  # noqa: F401  (register "ddpm", "flow")
