"""Objectives wrap a backbone ``f(x, t, y)``: they own ``loss`` and the callable samplers see."""

from genlab.generators.objectives import ctm, flow, rfpp  # noqa: F401  (register "ctm", "flow", "rfpp")
