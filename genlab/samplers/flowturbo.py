"""FlowTurbo (Zhao et al., NeurIPS 2024, "Towards Real-time Flow-Based Image Generation with Velocity Refiner").

A flow model's velocity changes little along the trajectory, so FlowTurbo samples in three blocks on one
uniform-by-default grid of N_H + N_P + N_R steps, named H{N_H}P{N_P}R{N_R} (the paper's default H1P5R3):

- H, Heun steps (two evaluations of the base model each);
- P, pseudo-corrector steps: a Heun step whose first slope is the velocity cached from the previous step's
  predictor point instead of a new evaluation, so one evaluation per step and still second order;
- R, refiner steps: Heun steps whose slopes come from a light velocity refiner r(x, t, v) (~5% of the base
  model's parameters) that predicts the change of velocity from a cached one: d = v + r(x, t, v).

Step i with slope d_i (h = t_{i+1} - t_i):  x~ = x_i + h d_i,  d~ = slope at (x~, t_{i+1}),
x_{i+1} = x_i + h/2 (d_i + d~). H evaluates d_i = v(x_i, t_i); P reuses the cached d~ of step i - 1; R uses
d_i = v + r(x_i, t_i, v) and d~ = d_i + r(x~, t_{i+1}, d_i), with v the cached slope (as the authors' code).
The refiner is trained against the base model by ``genlab.generators.refiner.RefinerLoss``.

The last step (to t = 0) is an Euler step x_N = x_{N-1} + h d_{N-1} by default, as in ``genlab.samplers.heun``
(``last_step="heun"`` keeps its corrector): a last P step then costs no evaluation at all, a last R step one
refiner call. On the quickstart model (cfg 3, 256 samples) H1P6 had FID 163.9 with the corrector at t = 0, worse than
Euler's 145.6 at the same 8 NFE; with the Euler last step H1P7 (also 8 NFE) has 135.6. See ``heun`` for why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import Tensor

from genlab.samplers.base import (
    Callback,
    RandnLike,
    Refiner,
    Times,
    Velocity,
    as_times,
    sampler,
    sampler_option,
    t_like,
)
from genlab.samplers.heun import check_last_step

# refiner steps chain refined velocities from one base evaluation; the paper's schedules use 3 to 5 of them, and
# longer chains drift (quickstart, 64 NFE: H1P62R37 had FID 175 against Euler's 126)
MAX_REFINE = 5
_BLOCKS = re.compile(r"^(?:H(\d+))?(?:P(\d+))?(?:R(\d+))?$")


@dataclass(frozen=True)
class Blocks:
    heun: int
    pseudo: int
    refine: int

    @property
    def steps(self) -> int:
        return self.heun + self.pseudo + self.refine

    @property
    def nfe(self) -> int:
        """Base-model evaluations with the default Euler last step: 2 per H step, 1 per P step, plus 1 to start
        when there is no H step, minus the corrector a last H or P step does not evaluate."""
        return 2 * self.heun + self.pseudo + (self.heun == 0 and self.steps > 0) - (self.refine == 0)

    def __str__(self) -> str:
        return f"H{self.heun}P{self.pseudo}R{self.refine}"

    @classmethod
    def parse(cls, text: str) -> Blocks:
        m = _BLOCKS.match(text.strip().upper())
        if not text.strip() or m is None:
            raise ValueError(f"flowturbo blocks {text!r} must look like H1P5R3 (Heun, pseudo-corrector, refiner steps)")
        b = cls(*(int(g or 0) for g in m.groups()))
        if b.steps == 0:
            raise ValueError(f"flowturbo blocks {text!r} have no steps")
        return b

    @classmethod
    def default(cls, steps: int, *, refiner: bool) -> Blocks:
        """One Heun step, then pseudo-corrector steps; with a refiner, the last ~third are refiner steps
        (9 steps -> the paper's H1P5R3)."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        heun = 1
        refine = steps // 3 if refiner else 0
        return cls(heun, steps - heun - refine, refine)

    @classmethod
    def for_nfe(cls, nfe: int, *, refiner: bool) -> Blocks:
        """Blocks spending ``nfe`` base evaluations (with the Euler last step): H1P{nfe-2} plus
        R = round(0.6 P) refiner steps, at most ``MAX_REFINE`` (7 -> H1P5R3); without a refiner H1P{nfe-1}."""
        if nfe < 2:
            raise ValueError(f"flowturbo needs at least 2 evaluations, got {nfe}")
        if not refiner:
            return cls(1, nfe - 1, 0)
        pseudo = nfe - 2
        return cls(1, pseudo, min(MAX_REFINE, max(1, round(0.6 * pseudo))))


@dataclass
class FlowTurboOptions:
    """FlowTurbo's own sampling options (a flow objective's ``SampleOptions`` includes them)."""

    blocks: str = sampler_option(
        "", "flowturbo: Heun, pseudo-corrector and refiner steps, e.g. H1P5R3 (sets the steps)"
    )


def _check_options(values: dict, steps: int) -> None:
    """ValueError for blocks that do not take ``steps`` steps."""
    if values.get("blocks"):
        b = Blocks.parse(values["blocks"])
        if b.steps != steps:
            raise ValueError(f"blocks {b} take {b.steps} steps, but steps is {steps}")


def _implied_steps(values: dict) -> int | None:
    """Blocks given without steps set the steps."""
    return Blocks.parse(str(values["blocks"])).steps if values.get("blocks") else None


@sampler(
    "flowturbo", optional=("refiner",), options=FlowTurboOptions, check=_check_options, implied_steps=_implied_steps
)
def flowturbo(
    velocity: Velocity,
    noise: Tensor,
    ts: Times,
    *,
    randn_like: RandnLike | None = None,
    callback: Callback | None = None,
    refiner: Refiner | None = None,
    blocks: str | Blocks | None = None,
    last_step: str = "euler",
) -> Tensor:
    """Sample with H/P/R blocks (``blocks``, default from the number of steps: ``Blocks.default``), which must
    take as many steps as ``ts`` has. Without a ``refiner``, the default has no R steps."""
    euler_last = check_last_step(last_step)
    ts = as_times(ts)
    steps = len(ts) - 1
    b = (
        Blocks.parse(blocks)
        if isinstance(blocks, str) and blocks
        else blocks or Blocks.default(steps, refiner=refiner is not None)
    )
    if b.steps != steps:
        raise ValueError(f"flowturbo blocks {b} take {b.steps} steps, but steps={steps}")
    if b.refine and refiner is None:
        raise ValueError(
            f"flowturbo blocks {b} have refiner steps but no velocity refiner was given; "
            "train one with `genlab train --preset flowturbo-refiner` or use blocks without R"
        )
    kinds = "H" * b.heun + "P" * b.pseudo + "R" * b.refine
    x, cached = noise, None
    for i, (kind, t_cur, t_next) in enumerate(zip(kinds, ts[:-1], ts[1:])):
        h = t_next - t_cur
        if kind == "R":
            if cached is None:  # R steps only: one base evaluation to start from
                cached = velocity(x, t_like(x, t_cur))
            d = cached + refiner(x, t_like(x, t_cur), cached)
        elif kind == "H" or cached is None:
            d = velocity(x, t_like(x, t_cur))
        else:
            d = cached  # pseudo corrector: the previous step's predictor-point velocity
        if euler_last and i == steps - 1:
            x = x + h * d
        else:
            x_pred = x + h * d
            if kind == "R":
                d_pred = d + refiner(x_pred, t_like(x, t_next), d)
                cached = d
            else:
                d_pred = velocity(x_pred, t_like(x, t_next))
                cached = d_pred
            x = x + 0.5 * h * (d + d_pred)
        if callback is not None:
            callback(i, t_next, x)
    return x
