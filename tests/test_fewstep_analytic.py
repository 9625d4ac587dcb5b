"""Few-step methods against analytic ground truth: the Gaussian flow of tests/analytic.py (x0 ~ N(MU, S²), exact
teacher velocity, exact flow map x_t -> x_s), so every claim is measured against the truth, in seconds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from analytic import MU, S, gaussian_exact, gaussian_velocity, rk4
from torch import nn

from genlab.generators.objectives.ctm import ConsistencyTrajectory, gamma_sample
from genlab.generators.objectives.rfpp import ImprovedRectifiedFlow, straightness
from genlab.samplers import integrate
from genlab.tokenizers.base import TokenSpec

SPEC = TokenSpec("continuous", (1, 1, 1))  # one Gaussian coordinate per sample


def flow_map(x: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The exact ODE map x_t -> x_s of the Gaussian flow: the monotone transport between its marginals
    N((1 - t) MU, (1 - t)² S² + t²)."""
    t, s = (v.view(-1, *([1] * (x.ndim - 1))).to(x.dtype) for v in (t, s))
    sd = lambda r: torch.sqrt((1 - r) ** 2 * S**2 + r**2)  # noqa: E731
    return (1 - s) * MU + sd(s) / sd(t) * (x - (1 - t) * MU)


class MLP(nn.Module):
    """A small backbone f(x, t, y[, s]) on (B, 1, 1, 1) tokens (the label is ignored)."""

    def __init__(self, times: int = 1, width: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.spec, self.num_classes, self.times = SPEC, 1, times
        self.net = nn.Sequential(nn.Linear(1 + 2 * times, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 1))  # fmt: skip

    def forward(self, x, t, y, s=None):
        feats = [x.flatten(1), t[:, None], t[:, None] ** 2]
        if self.times == 2:
            s = t if s is None else s
            feats += [s[:, None], (t - s)[:, None] * x.flatten(1)]
        return self.net(torch.cat(feats, 1).float()).view_as(x)


class Exact(nn.Module):
    def forward(self, x, t, y):
        return gaussian_velocity(x, t)


def train(objective, steps: int, batch: int, data, lr: float = 3e-3, on_step=None):
    opt = torch.optim.Adam(objective.backbone.parameters(), lr=lr)
    for step in range(steps):
        seeds = torch.arange(step * batch, (step + 1) * batch)
        loss = data(objective, seeds)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(step)


def test_reflow_makes_paths_straighter_and_one_step_sampling_better():
    torch.manual_seed(0)
    eps = torch.randn(2048, 1, 1, 1)
    x0 = integrate("heun", gaussian_velocity, eps, steps=32).x  # the teacher's pairs (eps, ODE(eps))
    rf2 = ImprovedRectifiedFlow(ImprovedRectifiedFlow.Config(premetric="l2", time_sampling="uniform",
                                                             class_dropout=0.0), MLP())  # fmt: skip
    y = torch.zeros(128, dtype=torch.long)
    train(rf2, 200, 128, lambda m, seeds: m.pair_loss(x0[seeds % 2048], eps[seeds % 2048], y, seeds))
    test = torch.randn(512, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        s1 = straightness(gaussian_velocity, test)
        s2 = straightness(lambda x, t: rf2.backbone(x, t, y[:1].expand(len(x))), test)
        one_step = lambda v: (test - v(test, torch.ones(len(test)))) - gaussian_exact(test)  # noqa: E731
        e1 = one_step(gaussian_velocity).abs().mean()
        e2 = one_step(lambda x, t: rf2.backbone(x, t, y[:1].expand(len(x)))).abs().mean()
    assert s1 > 0.05  # the 1-rectified (independent-coupling) flow is curved
    print(f"straightness 1-RF {s1:.4f} 2-RF {s2:.4f}; one-step error {e1:.4f} -> {e2:.4f}")
    assert s2 < 0.2 * s1, (s1, s2)
    assert e2 < 0.3 * e1, (e1, e2)  # so one Euler step lands near the ODE's endpoint


def jump_error(ctm, points) -> float:
    x, t, s = points
    with torch.no_grad():
        g = ctm.jump(ctm.backbone, x, t, s, torch.zeros(len(x), dtype=torch.long))
    return float((g - flow_map(x, t, s)).abs().mean())


def test_ctm_on_the_exact_teacher_learns_the_jumps():
    cfg = ConsistencyTrajectory.Config(class_dropout=0.0, solver_steps=8, target_decay=0.9, dsm_weight=1.0)
    ctm = ConsistencyTrajectory(cfg, MLP(times=2))
    ctm.attach("teacher", Exact())
    ctm.attach("target", copy.deepcopy(ctm.backbone).requires_grad_(False))
    g = torch.Generator().manual_seed(2)
    t = torch.rand(512, generator=g) * 0.9 + 0.1
    s = t * torch.rand(512, generator=g)
    x = flow_map(torch.randn(512, 1, 1, 1, generator=g), torch.ones(512), t)  # points on the teacher's paths
    points, errors = (x, t, s), {}

    def data(m, seeds):
        x0 = MU + S * torch.randn(len(seeds), 1, 1, 1, generator=torch.Generator().manual_seed(int(seeds[0])))
        return m.loss(x0, torch.zeros(len(seeds), dtype=torch.long), seeds)

    def on_step(step):
        ctm.update_target()
        if step + 1 in (25, 300):
            errors[step + 1] = jump_error(ctm, points)

    errors[0] = jump_error(ctm, points)
    train(ctm, 300, 64, data, on_step=on_step)
    print("CTM jump error |G(x_t, t, s) - exact| by training step:", errors)
    assert errors[25] < errors[0] and errors[300] < 0.5 * errors[25], errors
    assert errors[300] < 0.1, errors


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gamma_zero_with_exact_jumps_is_the_ode_solution(steps):
    noise = torch.randn(256, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    out = gamma_sample(flow_map, noise, ts, 0.0)
    assert torch.allclose(out, gaussian_exact(noise), atol=1e-9)


def test_gamma_zero_with_teacher_solver_jumps_is_within_the_solver_error():
    """Each jump is the CTM objective's teacher solver (Heun on its grid): γ = 0 over every intermediate step is the
    teacher's own ODE solution, so its error against the exact endpoint is Heun's, no more."""
    cfg = ConsistencyTrajectory.Config(solver_steps=16)
    ctm = ConsistencyTrajectory(cfg, MLP(times=2))
    ctm.attach("teacher", Exact())
    noise = torch.randn(256, 1, 1, 1, generator=torch.Generator().manual_seed(4))
    grid = torch.linspace(1, 0, 17)
    y = torch.zeros(256, dtype=torch.long)
    index = {round(float(v), 6): i for i, v in enumerate(grid)}

    def jump(x, t, s):  # the teacher solver from grid time t to grid time s
        n, k = (torch.full((len(x),), index[round(float(v[0]), 6)]) for v in (t, s))
        return ctm.solve(x, n, k, grid, y)

    for steps in (1, 4, 16):
        ts = grid[:: 16 // steps].tolist()
        out = gamma_sample(jump, noise, ts, 0.0)
        heun = integrate("heun", gaussian_velocity, noise, steps=16).x
        assert torch.allclose(out, heun, atol=1e-5)
    exact = rk4(gaussian_velocity, noise.double(), 256).float()
    solver_error = (heun - exact).abs().max()
    assert (out - exact).abs().max() <= solver_error + 1e-5 and solver_error < 0.02  # Heun's error on 16 steps


def test_gamma_one_renoises_and_keeps_the_distribution():
    noise = torch.randn(4096, 1, 1, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = torch.Generator().manual_seed(6)
    out = gamma_sample(flow_map, noise, [1.0, 0.6, 0.3, 0.0], 1.0,
                       lambda x, i: torch.randn(x.shape, generator=g, dtype=x.dtype))  # fmt: skip
    assert (out - gaussian_exact(noise)).abs().mean() > 0.05  # stochastic: not the ODE's deterministic map
    assert abs(out.mean() - MU) < 0.05 and abs(out.std() - S) < 0.05


def test_ctm_sample_with_an_exact_backbone_jumps_to_the_data():
    """The objective's own sample(): a backbone that is the exact average velocity (x - G(x, t, s)) / (t - s)."""

    class ExactMean(nn.Module):
        spec, num_classes = SPEC, 1

        def forward(self, x, t, y, s):
            d = (t - s).view(-1, 1, 1, 1)
            return (x - flow_map(x, t, s)) / d

    ctm = ConsistencyTrajectory(ConsistencyTrajectory.Config(), ExactMean())
    opts = ConsistencyTrajectory.SampleOptions(steps=1)
    res = ctm.sample(torch.zeros(8, dtype=torch.long), torch.arange(8), opts)
    from genlab.nn import per_sample_randn

    noise = per_sample_randn(torch.arange(8), (1, 1, 1), stream=0)
    assert res.nfe == 1 and torch.allclose(res.tokens, gaussian_exact(noise), atol=1e-5)
    assert math.isfinite(float(res.tokens.sum()))
