"""Rectified flow / flow matching with velocity prediction (Liu et al. 2022; Lipman et al. 2022).

genlab's one time convention: x_t = (1 - t) x0 + t eps, t = 1 pure noise, target v = eps - x0,
and the ODE dx/dt = v runs from t = 1 to t = 0. Timesteps are sampled uniformly or from a
logit-normal (SD3, Esser et al. 2024: t = sigmoid(m + s n), n ~ N(0, 1)), optionally shifted towards noise
for high resolutions (SD3 eq. 23 / FLUX: t' = s t / (1 + (s - 1) t), ``time_shift`` = s).

The loss is E ||f(x_t, t, y) - v||^2, plus, with ``cosine_weight`` w > 0, LightningDiT's velocity-direction term
w E[1 - cos(f, v)], the cosine taken over the channel axis at each position (``cosine_similarity(.., dim=1)``
in its transport.py), averaged over positions and samples; LightningDiT uses w = 1. (Negating both vectors
leaves the cosine unchanged, so its v = x0 - eps convention gives the same term.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab import registry
from genlab.generators.base import Generator, Sampled, SampleOptions, option
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.nn.sampling import drop_labels
from genlab.registry import register
from genlab.samplers import GUIDANCE_SCHEDULES, SCHEDULES, guided, integrate, option_classes, option_names
from genlab.samplers.schedules import shift_time

# independent per-sample random streams (see genlab.nn.rng)
NOISE, TIME, DROP, SAMPLER = 0, 1, 2, 16  # SAMPLER + k: a stochastic sampler's k-th draw


@dataclass
class _FlowOptions(SampleOptions):
    """How a flow model is integrated: a continuous sampler on a time grid, with classifier-free guidance."""

    sampler: str = option("euler", "a registered continuous sampler: euler, heun, dpm++, unipc, flowturbo")
    steps: int = option(32, "integration steps", low=1, high=10_000)
    cfg: float = option(1.0, "guidance scale, 1 = none", low=0.0, high=100.0)
    cfg_interval: tuple[float, ...] = option(
        (0.0, 1.0), "guide only for t in [LO, HI] (t = 1 is noise), e.g. 0.1,1.0", low=0.0, high=1.0,
        aliases=("guidance_interval",),
    )  # fmt: skip
    cfg_schedule: Literal[GUIDANCE_SCHEDULES] = option("constant", "guidance scale over time: constant, linear, cosine")
    guidance_channels: int = option(0, "guide only the first N channels (DiT/LightningDiT: 3); 0 = all", low=0)
    schedule: Literal[SCHEDULES] = option("uniform", "timestep schedule: uniform, logit_normal, edm")
    shift: float = option(1.0, "timestep shift s: t' = s t / (1 + (s - 1) t); 1 = none", low=1e-3, high=1e3)
    compile: bool = option(False, "torch.compile the networks (GPU; ignored on the CPU)")


@dataclass
class FlowSampleOptions(*reversed(option_classes()), _FlowOptions):
    """The flow options above plus every registered sampler's own options (FlowTurbo's ``blocks``), which reach
    the sampler only when it is the chosen one and declares them."""

    def check(self) -> None:
        fn = registry.get("sampler", self.sampler)  # an unknown name lists the registered ones
        if len(self.cfg_interval) != 2 or self.cfg_interval[0] > self.cfg_interval[1]:
            raise ValueError(
                f"cfg_interval must be LO,HI with 0 <= LO <= HI <= 1 (t = 1 is noise), got {self.cfg_interval}"
            )
        own = option_names(fn)
        for name, owner in _sampler_option_owners().items():
            if name not in own and getattr(self, name) != self.__dataclass_fields__[name].default:
                raise ValueError(f"{name} is an option of sampler {owner}")
        if getattr(fn, "check_options", None) is not None:
            fn.check_options(self.sampler_values(), self.steps)

    def sampler_values(self) -> dict[str, Any]:
        """The chosen sampler's own options, by name."""
        return {name: getattr(self, name) for name in option_names(registry.get("sampler", self.sampler))}

    @classmethod
    def merge(cls, defaults: SampleOptions, given: dict[str, Any]) -> SampleOptions:
        """Sampler options that imply the steps (FlowTurbo's ``blocks``), given without ``steps``, set them."""
        fn = registry.get("sampler", str(given.get("sampler", getattr(defaults, "sampler", "euler"))))
        implied = getattr(fn, "implied_steps", None)
        values = {k: given[k] for k in option_names(fn) if k in given}
        steps = implied(values) if implied is not None and values and "steps" not in given else None
        if steps is not None:
            given = {**given, "steps": steps}
        return super().merge(defaults, given)


def _sampler_option_owners() -> dict[str, str]:
    """Every registered sampler's own option -> the sampler's name."""
    return {f: name for name, fn in registry.registered("sampler").items() for f in option_names(fn)}


@register("objective", "flow")
class RectifiedFlow(Generator):
    """Wraps a backbone ``f(x, t, y)``; owns the training loss and the callable samplers see."""

    SampleOptions = FlowSampleOptions
    TOKEN_KINDS = ("continuous",)

    @dataclass
    class Config:
        time_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
        logit_mean: float = 0.0  # logit-normal location m
        logit_std: float = 1.0  # logit-normal scale s
        class_dropout: float = 0.1  # probability a label is replaced by the null class in training
        time_shift: float = 1.0  # s in t' = s t / (1 + (s - 1) t) on the sampled t (t = 1 noise); 1 = off
        cosine_weight: float = 0.0  # weight of the 1 - cos(pred, v) term (LightningDiT: 1); 0 = off

        def validate(self) -> None:
            if not (self.time_shift > 0 and math.isfinite(self.time_shift)):
                raise ValueError(f"time_shift must be a positive number, got {self.time_shift}")
            if not self.cosine_weight >= 0:
                raise ValueError(f"cosine_weight must be >= 0, got {self.cosine_weight}")
            if not 0.0 <= self.class_dropout < 1.0:
                raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")
            if self.logit_std <= 0:
                raise ValueError(f"logit_std must be positive, got {self.logit_std}")

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.spec = backbone.spec
        self.num_classes: int = backbone.num_classes  # label num_classes is the null class
        self.helpers: dict[str, nn.Module] = {}  # a FlowTurbo refiner ("refiner"), not part of these weights

    def weights_module(self) -> nn.Module:
        return self.backbone

    def attach(self, name: str, module: nn.Module) -> None:
        """A helper network trained against this model (FlowTurbo's velocity refiner: ``"refiner"``)."""
        self.helpers[name] = module

    def sample_t(self, seeds: Tensor, device) -> Tensor:
        u = per_sample_rand(seeds, stream=TIME, device=device)  # (B,)
        if self.cfg.time_sampling == "uniform":
            t = u
        else:
            n = torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))  # N(0, 1) from the same uniform
            t = torch.sigmoid(self.cfg.logit_mean + self.cfg.logit_std * n)
        return t if self.cfg.time_shift == 1.0 else shift_time(t, self.cfg.time_shift)

    def loss(self, x0: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """The flow-matching loss E ||f(x_t, t, y) - (eps - x0)||^2 (+ the cosine term); per-sample randomness."""
        B = x0.shape[0]
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=x0.device, dtype=x0.dtype)
        t = self.sample_t(seeds, x0.device)  # (B,)
        labels = drop_labels(labels, seeds, self.cfg.class_dropout, self.num_classes, stream=DROP)
        tb = t.view(B, *([1] * (x0.ndim - 1))).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * eps
        pred = self.backbone(x_t, t, labels)
        loss = velocity_loss(pred.float(), (eps - x0).float(), self.cfg.cosine_weight)
        return {"loss": loss}

    @torch.no_grad()
    def sample(self, labels: Tensor, seeds: Tensor, options: FlowSampleOptions) -> Sampled:
        """Integrate from per-sample noise (seed i -> image i, whatever the batch) to t = 0.

        The sampler gets the networks this model has (``networks``) and takes the ones it declares; its own
        options; and a per-sample ``randn_like`` (each call draws the next independent stream of every image's
        seed), so a stochastic sampler keeps image i from seed i. ``compile``: run the networks through
        ``torch.compile`` (for GPUs; the compiled modules are cached on the objective, one graph per batch shape)."""
        o = options
        noise = per_sample_randn(seeds, self.spec.shape, stream=NOISE, device=labels.device)
        res = integrate(
            o.sampler, self.networks(labels, o), noise, steps=o.steps, shift=o.shift, schedule=o.schedule,
            randn_like=sampler_noise(seeds), **o.sampler_values(),
        )  # fmt: skip
        return Sampled(tokens=res.x, nfe=res.nfe, nfe_by_network=res.nfe_by_network)

    def networks(self, labels: Tensor, o: FlowSampleOptions) -> dict[str, Any]:
        """The guided callables a sampler may take: ``velocity(x, t)`` and, when one is attached, FlowTurbo's
        ``refiner(x, t, v)`` (guided like the backbone)."""
        guide = dict(channels=o.guidance_channels, interval=tuple(o.cfg_interval), schedule=o.cfg_schedule)
        nets = {"velocity": (_compiled(self, "backbone") if o.compile else self.backbone)}
        for name, module in self.helpers.items():
            nets[name] = _compiled(module, None) if o.compile else module
        return {name: guided(net, labels, self.num_classes, o.cfg, **guide) for name, net in nets.items()}


def sampler_noise(seeds: Tensor) -> Callable[[Tensor], Tensor]:
    """``randn_like(x)`` for stochastic samplers: call k draws stream ``SAMPLER + k`` of each sample's seed, so
    image i's draws depend on seed i only."""
    calls = iter(range(SAMPLER, 1 << 62))

    def randn_like(x: Tensor) -> Tensor:
        return per_sample_randn(seeds, tuple(x.shape[1:]), stream=next(calls), device=x.device, dtype=x.dtype)

    return randn_like


def velocity_loss(pred: Tensor, target: Tensor, cosine_weight: float = 0.0) -> Tensor:
    """mean (pred - target)^2 + w mean(1 - cos(pred, target)), the cosine over dim 1 (channels) of (B, C, ...)."""
    loss = (pred - target).pow(2).mean()
    if cosine_weight > 0:
        loss = loss + cosine_weight * (1 - F.cosine_similarity(pred, target, dim=1)).mean()  # over (B, H, W)
    return loss


def _compiled(owner: nn.Module, attr: str | None) -> nn.Module:
    """``torch.compile`` of ``owner.attr`` (or of ``owner``), made once and cached outside the module tree."""
    key = f"_compiled_{attr or 'self'}"
    if key not in owner.__dict__:
        module = getattr(owner, attr) if attr else owner
        owner.__dict__[key] = torch.compile(module, dynamic=False)
    return owner.__dict__[key]
