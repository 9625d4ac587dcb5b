"""Improved rectified flow (rfpp; Lee, Lin & Fanti, "Improving the Training of Rectified Flows", NeurIPS 2024).

The flow objective (``objective: flow``; genlab's convention x_t = (1 - t) x0 + t eps, v = eps - x0, t = 1 noise,
which is rfpp's ``train.py`` convention z_t = (1 - t) x + t z) with rfpp's training choices as options:

- **U-shaped timesteps** (``time_sampling: u_shaped``, rfpp's ``t_dist.py``): t from the density ∝ e^{a t} on
  [0, 1] (a = 4, inverse CDF t = log(1 + u (e^a - 1)) / a), half of the draws flipped to 1 - t, clipped to
  [1e-5, 1 - 1e-5]: training concentrates at both ends, where one- and two-step sampling evaluates.
- **premetrics** (``premetric``): ``l2`` (the flow objective's mean squared error), ``pseudo_huber``
  (sqrt(||v̂ - v||² + c²) - c per sample, c = ``huber_c`` or 0.00054 sqrt(dim) as in iCT, Song & Dhariwal 2023)
  and ``lpips_huber``: (1 - t) Huber(v̂, v) + LPIPS(x̂, x0) (÷ t with ``lpips_divt``), x̂ = x_t - t v̂ the
  one-step data prediction. The perceptual part needs pixels, so the task that trains with it attaches a
  ``"perceptual"`` helper (tokens -> decoded images -> genlab's perceptual network, LPIPS-VGG from a local file or
  the offline Inception fallback, said in the log: ``genlab.tasks.fewstep.PerceptualDistance``).

Reflow trains this objective on noise-sample pairs (``pair_loss``); its one-step distillation is the same loss at
t = 1. rfpp's re-noising few-step sampler is the registered sampler ``rfpp`` (``genlab.samplers.rfpp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from genlab.generators.objectives.flow import DROP, NOISE, TIME, RectifiedFlow, velocity_loss
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.registry import register
from genlab.samplers.schedules import shift_time

FLIP = 3  # the per-sample stream of the U-shape's flip (0..2 are the flow objective's)
T_MIN = 1e-5  # rfpp's clip of t to [T_MIN, 1 - T_MIN]


def u_shaped_t(u: Tensor, flip: Tensor, a: float = 4.0) -> Tensor:
    """rfpp's U-shaped t: the inverse CDF of ∝ e^{a t} at the uniforms ``u`` (B,), flipped to 1 - t where ``flip``
    (B,) is < 0.5, clipped to [1e-5, 1 - 1e-5]."""
    t = torch.log1p(u.double() * math.expm1(a)) / a
    t = torch.where(flip < 0.5, 1 - t, t)
    return t.clamp(T_MIN, 1 - T_MIN).to(u.dtype)


def pseudo_huber(pred: Tensor, target: Tensor, c: float = 0.0) -> Tensor:
    """Per-sample sqrt(||pred - target||² + c²) - c over every non-batch dim, (B,); c = 0: 0.00054 sqrt(dim)."""
    d = (pred - target).flatten(1)
    c = c or 0.00054 * math.sqrt(d.shape[1])
    return torch.sqrt(d.pow(2).sum(1) + c * c) - c


def straightness(velocity, noise: Tensor, steps: int = 64) -> float:
    """Liu et al.'s straightness S = ∫_0^1 E ||(x_1 - x_0) - v(x_t, t)||² dt along the model's own Euler path from
    ``noise`` (0 for straight paths), estimated on ``steps`` uniform steps; ``velocity(x, t (B,))``."""
    x, path_v = noise, []
    for i in range(steps):
        t = 1.0 - i / steps
        v = velocity(x, noise.new_full((noise.shape[0],), t))
        path_v.append(v)
        x = x - v / steps
    chord = noise - x  # x_1 - x_0 of the path in genlab's direction: eps - x0
    return float(torch.stack([(chord - v).pow(2).flatten(1).sum(1).mean() for v in path_v]).mean())


@register("objective", "rfpp")
class ImprovedRectifiedFlow(RectifiedFlow):
    """The flow objective with rfpp's timestep distribution and premetrics; samples like ``flow``."""

    @dataclass
    class Config(RectifiedFlow.Config):
        time_sampling: Literal["uniform", "logit_normal", "u_shaped"] = "u_shaped"
        u_shape_a: float = 4.0  # a of the U-shaped density ∝ e^{a t} (rfpp: 4)
        premetric: Literal["l2", "pseudo_huber", "lpips_huber"] = "pseudo_huber"
        huber_c: float = 0.0  # the pseudo-Huber c; 0: 0.00054 sqrt(dim) (iCT's)
        lpips_divt: bool = False  # lpips_huber: divide the perceptual term by t (rfpp's --lpips_divt)

        def validate(self) -> None:
            super().validate()
            if not (self.u_shape_a > 0 and math.isfinite(self.u_shape_a)):
                raise ValueError(f"u_shape_a must be a positive number, got {self.u_shape_a}")
            if not (self.huber_c >= 0 and math.isfinite(self.huber_c)):
                raise ValueError(f"huber_c must be >= 0 (0: 0.00054 sqrt(dim)), got {self.huber_c}")

    LOG_KEYS = ()

    def sample_t(self, seeds: Tensor, device) -> Tensor:
        if self.cfg.time_sampling != "u_shaped":
            return super().sample_t(seeds, device)
        u = per_sample_rand(seeds, stream=TIME, device=device)
        t = u_shaped_t(u, per_sample_rand(seeds, stream=FLIP, device=device), self.cfg.u_shape_a)
        return t if self.cfg.time_shift == 1.0 else shift_time(t, self.cfg.time_shift)

    def loss(self, x0: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """rfpp's loss on independent noise (1-rectified flow); reflow passes its pairs to ``pair_loss``."""
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=x0.device, dtype=x0.dtype)
        return self.pair_loss(x0, eps, labels, seeds)

    def pair_loss(self, x0: Tensor, eps: Tensor, labels: Tensor, seeds: Tensor, t: Tensor | None = None
                  ) -> dict[str, Tensor]:  # fmt: skip
        """The premetric between f(x_t, t, y) and eps - x0 for the pairs (eps, x0), (B, ...) each; ``t`` (B,) fixes
        the times (one-step distillation: t = 1), else they are drawn from the seeds."""
        B = x0.shape[0]
        if t is None:
            t = self.sample_t(seeds, x0.device)  # (B,)
        drop = per_sample_rand(seeds, stream=DROP, device=x0.device) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        tb = t.view(B, *([1] * (x0.ndim - 1))).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * eps
        pred = self.backbone(x_t, t, labels).float()
        target = (eps - x0).float()
        return {"loss": self.premetric(pred, target, x_t, x0, t)}

    def premetric(self, pred: Tensor, target: Tensor, x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """The configured distance between predicted and target velocity (a scalar, mean over the batch)."""
        cfg = self.cfg
        if cfg.premetric == "l2":
            return velocity_loss(pred, target, cfg.cosine_weight)
        huber = pseudo_huber(pred, target, cfg.huber_c)  # (B,)
        if cfg.premetric == "pseudo_huber":
            return huber.mean()
        perceptual = self.helpers.get("perceptual")
        if perceptual is None:
            raise ValueError(
                "premetric lpips_huber needs decoded images: train it with a task that attaches the perceptual "
                "distance (reflow, slimflow), or use premetric pseudo_huber"
            )
        tb = t.view(-1, *([1] * (x_t.ndim - 1))).float()
        x_hat = x_t.float() - tb * pred  # (B, ...) one-step data prediction
        lp = perceptual(x_hat, x0.float())  # (B,)
        if cfg.lpips_divt:
            lp = lp / t.float().clamp_min(T_MIN)
        return ((1 - t.float()) * huber + lp).mean()
