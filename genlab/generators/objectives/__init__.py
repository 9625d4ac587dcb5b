"""Objectives wrap a backbone ``f(x, t, y)``: they own ``loss`` and the callable samplers see."""

from genlab.generators.objectives import ctm, ddpm, flow, rfpp  # noqa: F401  (register "ctm", "ddpm", "flow", "rfpp")
