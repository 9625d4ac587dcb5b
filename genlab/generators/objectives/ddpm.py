"""DiT's objective: DDPM with ε-prediction and IDDPM's learned variance (Ho et al. 2020; Nichol & Dhariwal 2021;
Peebles & Xie 2023), on any continuous backbone ``f(x, t, y)``.

Training (IDDPM's hybrid loss, DiT's ``loss_type=MSE`` with ``learn_sigma``): a step n uniform in 0..N-1,
x_n = sqrt(abar_n) x0 + sqrt(1 - abar_n) eps, and

    L = E ||eps - eps_hat(x_n, n)||^2 + L_vlb,

L_vlb the KL of the learned-range Gaussian to the posterior (the mean from a detached eps_hat, so the VLB term only
trains the variance; IDDPM eq. 16 with lambda = 1, DiT's unscaled sum). With ``learn_sigma`` the objective asks the
backbone for 2 C output channels (``backbone_overrides``); without it the variance is IDDPM's fixed_large and
L is the ε-MSE alone.

Time: the backbone gets t = n / N, so DiT's embedding of 1000 t is its step index (``DiT.Config.time_scale``); the
flow samplers' time maps to n through the schedule (``gaussian.Diffusion.continuous_step``).

Sampling: ``ddpm`` (ancestral, IDDPM's p_sample_loop on the respaced process; DiT samples with 250 steps),
``ddim`` (Song et al. 2021 eq. 12, η = ``eta``), or any registered continuous sampler (euler, heun, dpm++, unipc,
flowturbo without a refiner) driving the ε-model through its velocity v = eps_hat - x0_hat at flow time t.
Guidance combines the raw network outputs (``guidance_channels`` 3 is DiT's rule: the first 3 channels guided, the
rest, learned variance included, from the conditional pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from genlab.generators.base import Generator, GeneratorError, Sampled, SampleOptions, option
from genlab.generators.objectives.flow import FlowSampleOptions, _compiled
from genlab.generators.objectives.gaussian import Diffusion, linear_betas
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.registry import register
from genlab.samplers import guided, integrate

# per-sample random streams (genlab.nn.rng): the initial noise, the training step and label drop, then one stream
# per ancestral step (STEP + k)
NOISE, TIME, DROP, STEP = 0, 1, 2, 16
NATIVE = ("ddpm", "ddim")


@dataclass
class DDPMSampleOptions(FlowSampleOptions):
    """DDPM/DDIM on the respaced process, or a continuous sampler on flow time (``shift``/``schedule`` apply there)."""

    sampler: str = option("ddpm", "ddpm, ddim, or a continuous sampler: euler, heun, dpm++, unipc, flowturbo")
    steps: int = option(250, "steps (ddpm/ddim: of the respaced process)", low=1, high=10_000)
    spacing: Literal["iddpm", "leading"] = option(
        "iddpm", "ddpm/ddim respacing: iddpm (evenly with both ends, DiT) or leading (k N/steps, diffusers' DDIM)"
    )
    eta: float = option(0.0, "ddim: the noise scale eta (0 deterministic, 1 DDPM-like)", low=0.0, high=1.0)

    @classmethod
    def merge(cls, defaults: SampleOptions, given: dict[str, Any]) -> SampleOptions:
        """ddpm/ddim are this objective's own samplers, not registered ones: no sampler options to merge."""
        if str(given.get("sampler", getattr(defaults, "sampler", "ddpm"))) in NATIVE:
            return super(FlowSampleOptions, cls).merge(defaults, given)
        return super().merge(defaults, given)

    def check(self) -> None:
        if self.sampler in NATIVE:
            if self.shift != 1.0 or self.schedule != "uniform" or self.blocks:
                raise ValueError("shift, schedule and blocks apply to continuous samplers, not to ddpm/ddim")
            if len(self.cfg_interval) != 2 or self.cfg_interval[0] > self.cfg_interval[1]:
                raise ValueError(f"cfg_interval must be LO,HI with 0 <= LO <= HI <= 1, got {self.cfg_interval}")
            return
        super().check()


@register("objective", "ddpm")
class DDPM(Generator):
    """Wraps a backbone ``f(x, t, y)`` as DiT's ε-prediction diffusion (learned σ by default)."""

    SampleOptions = DDPMSampleOptions
    TOKEN_KINDS = ("continuous",)
    LOG_KEYS = ("mse", "vb")

    @dataclass
    class Config:
        num_steps: int = 1000  # N, the diffusion's steps (DiT: 1000)
        beta_start: float = 1e-4  # the linear schedule's first beta (at N = 1000; IDDPM scales by 1000 / N)
        beta_end: float = 0.02  # and its last
        learn_sigma: bool = True  # 2 C outputs, the variance learned by the VLB term (DiT); False: fixed_large
        class_dropout: float = 0.1  # probability a label is replaced by the null class in training

        def validate(self) -> None:
            if self.num_steps < 2:
                raise ValueError(f"num_steps must be >= 2, got {self.num_steps}")
            if not 0 < self.beta_start < self.beta_end < 1000 / self.num_steps:
                raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
            if not 0.0 <= self.class_dropout < 1.0:
                raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")

    @classmethod
    def backbone_overrides(cls, cfg: Config, spec) -> dict[str, Any]:
        """Backbone config fields this objective needs: ``learn_sigma`` (2 C output channels)."""
        return {"learn_sigma": cfg.learn_sigma}

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        self.cfg, self.backbone, self.spec = cfg, backbone, backbone.spec
        self.num_classes: int = backbone.num_classes
        self.diffusion = Diffusion(linear_betas(cfg.num_steps, cfg.beta_start, cfg.beta_end))

    def weights_module(self) -> nn.Module:
        return self.backbone

    def _time(self, n: Tensor) -> Tensor:
        """The backbone's t of (fractional) original steps n: n / N in float64, so 1000 t is exactly n."""
        return n.double() / self.cfg.num_steps

    def loss(self, x0: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """ε-MSE + VLB (IDDPM's hybrid loss) at one uniform step per sample; per-sample randomness."""
        d, dev = self.diffusion, x0.device
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=dev, dtype=x0.dtype)
        n = (per_sample_rand(seeds, stream=TIME, device=dev) * d.num_steps).long().clamp(max=d.num_steps - 1)
        drop = per_sample_rand(seeds, stream=DROP, device=dev) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        mse, vb = self.loss_terms(x0, labels, n, eps)
        return {"loss": (mse + vb).mean(), "mse": mse.mean().detach(), "vb": vb.mean().detach()}

    def loss_terms(self, x0: Tensor, labels: Tensor, n: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample (B,) ε-MSE and VLB terms at steps n (B,) long with noise eps (IDDPM's training_losses)."""
        d, C = self.diffusion, x0.shape[1]
        x_n = d.q_sample(x0, n, eps)
        out = self.backbone(x_n, self._time(n), labels).float()  # (B, C or 2C, H, W)
        mse = (eps.float() - out[:, :C]).pow(2).flatten(1).mean(1)
        vb = torch.zeros_like(mse)
        if self.cfg.learn_sigma:  # the VLB trains the variance only: the mean comes from a detached eps_hat
            vb = d.vlb(torch.cat([out[:, :C].detach(), out[:, C:]], 1), x0.float(), x_n.float(), n)
        return mse, vb

    def check_options(self, options: DDPMSampleOptions) -> None:
        if options.sampler in NATIVE and options.steps > self.cfg.num_steps:
            raise GeneratorError(f"{options.sampler} takes at most {self.cfg.num_steps} steps, got {options.steps}")
        if options.sampler == "flowturbo" and options.blocks and "R" in options.blocks.upper():
            raise GeneratorError("flowturbo's refiner steps need a flow model's refiner; use blocks without R")

    def network(self, labels: Tensor, options: DDPMSampleOptions) -> Callable[..., Tensor]:
        """``g(x_n, t_flow, t_net)``: the guided backbone; guidance's interval and schedule read the flow time."""
        o = options
        net = _compiled(self, "backbone") if o.compile else self.backbone

        def eps_net(x: Tensor, t_flow: Tensor, y: Tensor, t_net: Tensor) -> Tensor:
            return net(x, t_net, y)

        guide = dict(channels=o.guidance_channels, interval=tuple(o.cfg_interval), schedule=o.cfg_schedule)
        return guided(eps_net, labels, self.num_classes, o.cfg, **guide)

    def velocity(self, g: Callable[..., Tensor], x: Tensor, t: Tensor) -> Tensor:
        """genlab's flow velocity v = eps_hat - x0_hat at flow time t (B,): the network sees x_n = x_t / r,
        r = sqrt((1 - t)^2 + t^2), at the step n(t), clamped to DDPM's range (t = 1 runs as n = N - 1)."""
        d, C = self.diffusion, x.shape[1]
        tt = t.double()
        n = d.continuous_step(tt)
        view = (-1, *([1] * (x.ndim - 1)))
        x_n = x / ((1 - tt) ** 2 + tt**2).sqrt().to(x.dtype).view(view)
        eps = g(x_n, t, self._time(n))[:, :C]
        abar = d.abar_at(n)
        a, b = abar.sqrt().to(x.dtype).view(view), (1 - abar).sqrt().to(x.dtype).view(view)
        return eps - (x_n - b * eps) / a

    @torch.no_grad()
    def sample(self, labels: Tensor, seeds: Tensor, options: DDPMSampleOptions) -> Sampled:
        """From per-sample noise (seed i -> image i, whatever the batch) to the data."""
        o = options
        noise = per_sample_randn(seeds, self.spec.shape, stream=NOISE, device=labels.device)
        g = self.network(labels, o)
        if o.sampler in NATIVE:
            d = self.diffusion.respaced(o.steps, o.spacing)

            def step_noise(k: int) -> Tensor:
                return per_sample_randn(seeds, self.spec.shape, stream=STEP + k, device=labels.device)

            x = diffusion_loop(self, g, noise, d, o.sampler, step_noise, eta=o.eta)
            return Sampled(tokens=x, nfe=len(d.timesteps))
        res = integrate(o.sampler, lambda x, t: self.velocity(g, x, t), noise, steps=o.steps, shift=o.shift,
                        schedule=o.schedule, **({"blocks": o.blocks or None} if o.sampler == "flowturbo" else {}))  # fmt: skip
        return Sampled(tokens=res.x, nfe=res.nfe)


def diffusion_loop(model: DDPM, g: Callable[..., Tensor], noise: Tensor, d: Diffusion, kind: str,
                   step_noise: Callable[[int], Tensor], *, eta: float = 0.0) -> Tensor:  # fmt: skip
    """IDDPM's p_sample_loop (``ddpm``) or ddim_sample_loop (``ddim``) over the respaced ``d``, from index K-1 to 0;
    ``step_noise(k)`` is the Gaussian noise of step k (not drawn for deterministic DDIM)."""
    x, B = noise, noise.shape[0]
    learned = model.cfg.learn_sigma
    for k in reversed(range(len(d.timesteps))):
        kk = torch.full((B,), k, dtype=torch.long, device=x.device)
        n = torch.full((B,), d.timesteps[k], dtype=torch.float64, device=x.device)
        t_flow = x.new_full((B,), d.flow_time(k))
        out = g(x, t_flow, model._time(n))
        mean, log_var, x0 = d.p_mean_variance(out, x, kk, learned)
        if kind == "ddpm":
            x = mean if k == 0 else mean + torch.exp(0.5 * log_var) * step_noise(k)
            continue
        eps = (d.at(d.sqrt_recip_abar, kk, x) * x - x0) / d.at(d.sqrt_recipm1_abar, kk, x)
        abar, abar_prev = d.at(d.abar, kk, x), d.at(d.abar_prev, kk, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        x = x0 * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        if eta > 0 and k > 0:
            x = x + sigma * step_noise(k)
    return x
