"""Consistency trajectory models (CTM; Kim et al., "Consistency Trajectory Model", ICLR 2024; sony/ctm).

CTM's parameterisation G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s) (its eq. 4, ``karras_diffusion.py``)
carries over to genlab's flow convention (x_t = (1 - t) x0 + t eps, t = 1 noise) unchanged, since the flow's own
Euler/DDIM step from t to s is x_s = (s / t) x_t + (1 - s / t) x̂0. With g = x_t - t f(x_t, t, s) it reads

    G(x_t, t, s) = x_t - (t - s) f(x_t, t, y, s),

an Euler step with a learned velocity f that also sees the target time s (the backbone's second time input,
``time_inputs: 2``, requested through ``backbone_overrides``). f(x, t, y, t) is an ordinary flow velocity, so a
CTM initialised from a flow teacher starts as the teacher's one-step Euler jump (the s embedding starts at zero).

Training (CTM's eqs. 8-10), per sample, on a grid t_0 = 1 > ... > t_N = 0 of the teacher solver: t = t_n, s = t_m,
u = t_k with n < k <= m (k - n <= ``max_solver_steps``), x_t = (1 - t) x0 + t eps, and

    L_CTM = d( G_sg(G_θ(x_t, t, s), s, 0),  G_sg(G_sg(Solver(x_t, t -> u), u, s), s, 0) )   (soft matching)
    L_DSM = || f_θ(x_t, t, y, t) - (eps - x0) ||²                                          (keeps g a denoiser)

with G_sg the EMA target network (``target_decay``; its weights get no gradient), Solver the frozen teacher's
Heun steps on the grid (attached as ``"teacher"``; without one, the target's own jump, CTM's ``self_learn``), and
d the pseudo-Huber distance (CTM measures d in LPIPS feature space; genlab uses pseudo-Huber so it runs offline).
CTM's optional GAN term is a helper too (attached as ``"adversary"`` by the ``ctm`` task, ``ctm.gan``): it sees
the estimate G_sg(G_θ(x_t, t, s), s, 0) beside the data and adds λ_GAN L_GAN, λ_GAN from L_CTM's and L_GAN's
gradients at the backbone's last layer (``genlab.tasks.ctm.CTMAdversary``).

Sampling is CTM's γ-sampling (``sample_util.py``): from t_i jump to s = the time whose noise-to-signal ratio is
sqrt(1 - γ²) that of t_{i+1}, then re-noise to t_{i+1}. γ = 0: deterministic long jumps (one network evaluation per
step; with exact jumps, the ODE's solution); γ = 1: jump to the data and re-noise (CM-style multistep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.generators.base import Generator, Sampled, SampleOptions, option
from genlab.generators.objectives.rfpp import pseudo_huber
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.registry import register
from genlab.samplers import SCHEDULES, Counted, guided, timesteps

# per-sample random streams
NOISE, TIME, DROP, TARGET, SOLVER = 0, 1, 2, 3, 4
RENOISE = 16  # γ-sampling's step i draws from stream RENOISE + i


def gamma_times(t_next: float, gamma: float) -> float:
    """The time s a γ-sampling jump lands on before re-noising to ``t_next``: sqrt(1 - γ²) times t_next's
    noise-to-signal ratio σ = t / (1 - t) (CTM's s = sqrt(1 - γ²) t_{n+1} in EDM's σ)."""
    if gamma == 0.0 or t_next == 0.0:
        return t_next
    if t_next >= 1.0:
        return t_next if gamma < 1.0 else 0.0
    sigma = math.sqrt(1 - gamma * gamma) * t_next / (1 - t_next)
    return sigma / (1 + sigma)


def gamma_sample(jump, noise: Tensor, ts: list[float], gamma: float, randn_like=None) -> Tensor:
    """CTM's γ-sampling over the decreasing times ``ts`` (1 ... 0): x <- jump(x, t_i, s), then, if s < t_{i+1},
    x <- (1 - t')/(1 - s) x + sqrt(t'² - ((1 - t') s / (1 - s))²) z with t' = t_{i+1} (the flow's forward
    re-noising from s to t'); ``randn_like(x, i)`` draws step i's z."""
    x = noise
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:])):
        s = gamma_times(t_next, gamma)
        x = jump(x, x.new_full((x.shape[0],), t), x.new_full((x.shape[0],), s))
        if s < t_next:
            a = (1 - t_next) / (1 - s)
            x = a * x + math.sqrt(max(t_next**2 - (a * s) ** 2, 0.0)) * randn_like(x, i)
    return x


@dataclass
class CTMSampleOptions(SampleOptions):
    """CTM's γ-sampling: ``steps`` jumps (one network evaluation each) with re-noising ``gamma``."""

    steps: int = option(1, "jumps (network evaluations per image)", low=1, high=10_000)
    gamma: float = option(0.0, "γ-sampling: 0 = deterministic long jumps ... 1 = CM-style multistep", low=0.0,
                          high=1.0)  # fmt: skip
    cfg: float = option(1.0, "guidance scale, 1 = none", low=0.0, high=100.0)
    schedule: Literal[SCHEDULES] = option("uniform", "time grid of the jumps: uniform, logit_normal, edm")
    shift: float = option(1.0, "timestep shift s: t' = s t / (1 + (s - 1) t); 1 = none", low=1e-3, high=1e3)


@register("objective", "ctm")
class ConsistencyTrajectory(Generator):
    """Wraps a two-time backbone ``f(x, t, y, s)``; owns CTM's losses and γ-sampling."""

    SampleOptions = CTMSampleOptions
    TOKEN_KINDS = ("continuous",)
    LOG_KEYS = ("ctm", "dsm")

    @dataclass
    class Config:
        class_dropout: float = 0.1  # probability a label is replaced by the null class in training
        ctm_weight: float = 1.0  # weight of the soft consistency matching term
        dsm_weight: float = 1.0  # weight of the DSM (flow-matching) term at s = t
        solver_steps: int = 18  # N: intervals of the teacher solver's grid (CTM: 18 on CIFAR-10, 40 on ImageNet-64)
        solver_schedule: Literal[SCHEDULES] = "uniform"  # that grid's schedule
        max_solver_steps: int = 0  # most teacher steps from t to u (0: any up to s, CTM's full soft matching)
        huber_c: float = 0.0  # pseudo-Huber c of the distance d; 0: 0.00054 sqrt(dim)
        target_decay: float = 0.999  # EMA decay of the target network G_sg (CTM: 0.999)

        def validate(self) -> None:
            if not 0.0 <= self.class_dropout < 1.0:
                raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")
            for key in ("ctm_weight", "dsm_weight", "huber_c"):
                if not (getattr(self, key) >= 0 and math.isfinite(getattr(self, key))):
                    raise ValueError(f"{key} must be a number >= 0, got {getattr(self, key)}")
            if not 1 <= self.solver_steps <= 1000 or self.max_solver_steps < 0:
                raise ValueError("solver_steps must be in [1, 1000] and max_solver_steps >= 0")
            if not 0.0 <= self.target_decay < 1.0:
                raise ValueError(f"target_decay must be in [0, 1), got {self.target_decay}")

    @classmethod
    def backbone_overrides(cls, cfg: Config, spec) -> dict:
        return {"time_inputs": 2}  # s, the time G jumps to

    def __init__(self, cfg: Config, backbone: nn.Module):
        super().__init__()
        self.cfg, self.backbone, self.spec = cfg, backbone, backbone.spec
        self.num_classes: int = backbone.num_classes
        # "teacher" (a velocity f(x, t, y)), "target" (EMA backbone), "adversary" (the GAN term, optional)
        self.helpers: dict[str, nn.Module] = {}

    def weights_module(self) -> nn.Module:
        return self.backbone

    def attach(self, name: str, module: nn.Module) -> None:
        """``"teacher"``: the frozen flow velocity f(x, t, y) of the solver; ``"target"``: the EMA target network;
        ``"adversary"``: ``adversary(real=x0, fake=estimate, ctm=L_CTM, last_layer=W, seeds=seeds) -> dict`` whose
        ``"loss"`` is added to the generator's loss and whose other keys are passed on (the discriminator's loss)."""
        self.helpers[name] = module

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- μ target + (1 - μ) online (CTM's EMA of G_sg), once per optimizer step."""
        target = self.helpers.get("target")
        if target is None:
            return
        for p_t, p in zip(target.parameters(), self.backbone.parameters()):
            p_t.lerp_(p.detach(), 1 - self.cfg.target_decay)

    def jump(self, net, x: Tensor, t: Tensor, s: Tensor, y: Tensor) -> Tensor:
        """G(x, t, s) = x - (t - s) f(x, t, y, s); x (B, ...), t, s, y (B,)."""
        d = (t - s).view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return x - d * net(x, t, y, s)

    # ------------------------------------------------------------------ training

    def grid_times(self, seeds: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample grid indices (n, k, m) of t > u >= s, (B,) each: n < k <= m <= N."""
        N, L = self.cfg.solver_steps, self.cfg.max_solver_steps
        n = (per_sample_rand(seeds, stream=TIME, device=device) * N).long().clamp(max=N - 1)
        m = n + 1 + (per_sample_rand(seeds, stream=TARGET, device=device) * (N - n)).long().clamp(max=N - n - 1)
        span = m - n if L == 0 else (m - n).clamp(max=L)
        k = n + 1 + (per_sample_rand(seeds, stream=SOLVER, device=device) * span).long().clamp(max=span - 1)
        return n, k, m

    @torch.no_grad()
    def solve(self, x: Tensor, n: Tensor, k: Tensor, grid: Tensor, y: Tensor) -> Tensor:
        """The teacher's Heun steps from grid[n] to grid[k] per sample (Euler into t = 0); without a teacher, the
        target network's jump (CTM's self_learn)."""
        teacher = self.helpers.get("teacher")
        if teacher is None:
            target = self.helpers.get("target", self.backbone)
            return self.jump(target, x, grid[n], grid[k], y)
        view = (-1, *([1] * (x.ndim - 1)))
        for j in range(int((k - n).max())):
            active = (n + j < k).view(view)
            i = (n + j).clamp(max=len(grid) - 2)
            t, s = grid[i], grid[i + 1]
            h = (s - t).view(view).to(x.dtype)
            v = teacher(x, t, y)
            x_e = x + h * v
            v2 = teacher(x_e, s.clamp_min(1e-6), y)
            x_h = torch.where((s > 0).view(view), x + h * (v + v2) / 2, x_e)
            x = torch.where(active, x_h, x)
        return x

    def loss(self, x0: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        cfg, dev = self.cfg, x0.device
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=dev, dtype=x0.dtype)
        drop = per_sample_rand(seeds, stream=DROP, device=dev) < cfg.class_dropout
        y = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        grid = timesteps(cfg.solver_steps, schedule=cfg.solver_schedule).to(device=dev, dtype=torch.float32)
        n, k, m = self.grid_times(seeds, dev)
        t, u, s = grid[n], grid[k], grid[m]
        tb = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * eps
        target = self.helpers.get("target", self.backbone)
        zero = torch.zeros_like(s)
        est = self.jump(target, self.jump(self.backbone, x_t, t, s, y), s, zero, y)
        with torch.no_grad():
            x_u = self.solve(x_t, n, k, grid, y)
            tgt = self.jump(target, self.jump(target, x_u, u, s, y), s, zero, y)
        ctm = pseudo_huber(est.float(), tgt.float(), cfg.huber_c).mean()
        dsm = (self.backbone(x_t, t, y, t).float() - (eps - x0).float()).pow(2).mean()
        out = {"loss": cfg.ctm_weight * ctm + cfg.dsm_weight * dsm, "ctm": ctm.detach(), "dsm": dsm.detach()}
        adversary = self.helpers.get("adversary")
        if adversary is None:
            return out
        gan = adversary(real=x0, fake=est, ctm=ctm, last_layer=self.backbone.last_layer(), seeds=seeds)
        return {**out, **gan, "loss": out["loss"] + gan["loss"]}

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(self, labels: Tensor, seeds: Tensor, options: CTMSampleOptions) -> Sampled:
        """γ-sampling from per-sample noise (seed i -> image i, whatever the batch), one evaluation per step."""
        o = options
        noise = per_sample_randn(seeds, self.spec.shape, stream=NOISE, device=labels.device)
        net = Counted(guided(self.backbone, labels, self.num_classes, o.cfg))

        def randn_like(x: Tensor, i: int) -> Tensor:
            return per_sample_randn(seeds, tuple(x.shape[1:]), stream=RENOISE + i, device=x.device, dtype=x.dtype)

        def jump(x: Tensor, t: Tensor, s: Tensor) -> Tensor:
            return x - (t - s).view(-1, *([1] * (x.ndim - 1))).to(x.dtype) * net(x, t, s)

        ts = timesteps(o.steps, shift=o.shift, schedule=o.schedule).tolist()
        x = gamma_sample(jump, noise, ts, o.gamma, randn_like)
        return Sampled(tokens=x, nfe=net.calls)
