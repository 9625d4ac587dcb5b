"""The rectified-flow objective and the Euler sampler, against problems with known answers."""

import math

import numpy as np
import pytest
import torch

from genlab.generators.dit import DiT, latent_spec
from genlab.generators.objectives.flow import FlowSampleOptions, RectifiedFlow
from genlab.samplers import guided, integrate, timesteps

MU, S = 2.0, 0.5  # data N(MU, S^2); noise N(0, 1)


def gaussian_velocity(x, t):
    """Exact flow velocity for x_t = (1-t) x0 + t eps with x0 ~ N(MU, S^2): d/dt of the marginal-matching map."""
    t = t.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    var = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) / var * (x - (1 - t) * MU)


def test_euler_converges_at_first_order():
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + S * noise  # the ODE maps eps to MU + S eps
    steps = [8, 16, 32, 64, 128]
    errors = [(integrate("euler", gaussian_velocity, noise, steps=n).x - exact).abs().max().item() for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -1.15 < slope < -0.85, f"Euler's order {-slope:.2f}, errors {errors}"
    assert errors[-1] < 0.05  # and it converges to the exact transport map


def test_euler_counts_nfe_and_schedules():
    res = integrate("euler", gaussian_velocity, torch.zeros(2, 1, dtype=torch.float64), steps=5)
    assert res.nfe == 5
    ts = timesteps(4, shift=3.0)
    assert ts[0] == 1 and ts[-1] == 0 and bool((ts[:-1] > ts[1:]).all())
    with pytest.raises(ValueError):
        timesteps(0)


def test_cfg_scale_one_is_the_conditional_prediction_and_channels_option():
    calls = []

    def net(x, t, y):
        calls.append(len(x))
        return x * 0 + y.view(-1, 1, 1, 1).float() + torch.arange(x.shape[1]).view(1, -1, 1, 1)

    x, t, y = torch.zeros(2, 4, 2, 2), torch.full((2,), 0.5), torch.tensor([1, 2])
    assert torch.equal(guided(net, y, 10, 1.0)(x, t), net(x, t, y))
    assert calls == [2, 2]  # scale 1: no unconditional pass at all
    out = guided(net, y, 10, 2.0)(x, t)  # uncond + 2 (cond - uncond) = 2 cond - uncond
    assert torch.allclose(out[:, 0, 0, 0], 2 * torch.tensor([1.0, 2.0]) - 10)
    three = guided(net, y, 10, 2.0, channels=3)(x, t)
    assert torch.equal(three[:, :3], out[:, :3]) and torch.equal(three[:, 3], net(x, t, y)[:, 3])
    outside = guided(net, y, 10, 2.0, interval=(0.0, 0.4))(x, t)
    assert torch.equal(outside, net(x, t, y))


def tiny_flow(num_classes=3, **kw):
    torch.manual_seed(0)
    dit = DiT(
        DiT.Config(depth=2, hidden_size=64, num_heads=4, patch_size=2),
        spec=latent_spec(3, 8),
        num_classes=num_classes,
    )
    return RectifiedFlow(RectifiedFlow.Config(**kw), dit)


def test_flow_loss_falls_when_overfitting_a_batch():
    flow = tiny_flow(class_dropout=0.0)
    x0 = torch.rand(8, 3, 8, 8) * 2 - 1
    labels = torch.arange(8) % 3
    seeds = torch.arange(8)
    opt = torch.optim.AdamW(flow.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        loss = flow.loss(x0, labels, seeds)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())


def test_flow_loss_is_deterministic_per_sample_seed():
    flow = tiny_flow()
    x0, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    a = flow.loss(x0, labels, torch.tensor([5, 6, 7, 8]))["loss"]
    b = flow.loss(x0, labels, torch.tensor([5, 6, 7, 8]))["loss"]
    c = flow.loss(x0, labels, torch.tensor([1, 2, 3, 4]))["loss"]
    assert a.item() == b.item() and a.item() != c.item()


def test_time_sampling_distributions():
    flow_u, flow_ln = tiny_flow(time_sampling="uniform"), tiny_flow(time_sampling="logit_normal")
    seeds = torch.arange(4000)
    tu, tl = flow_u.sample_t(seeds, "cpu"), flow_ln.sample_t(seeds, "cpu")
    assert abs(tu.mean().item() - 0.5) < 0.02 and abs(tu.var().item() - 1 / 12) < 0.01
    logits = torch.logit(tl)
    assert abs(logits.mean().item()) < 0.06 and abs(logits.std().item() - 1.0) < 0.05
    assert 0 < tl.min() and tl.max() < 1 and not math.isclose(tu.var().item(), tl.var().item(), rel_tol=0.1)


def test_sampling_is_per_sample_deterministic_across_batch_sizes():
    flow = tiny_flow()
    for p in flow.parameters():
        torch.nn.init.normal_(p, std=0.05)
    labels, seeds = torch.tensor([0, 1, 2, 1]), torch.tensor([10, 11, 12, 13])
    opts = FlowSampleOptions(steps=4, cfg=2.0)
    full = flow.sample(labels, seeds, opts).tokens
    halves = torch.cat([flow.sample(labels[i : i + 2], seeds[i : i + 2], opts).tokens for i in (0, 2)])
    assert torch.allclose(full, halves, atol=1e-5)
    other = flow.sample(labels, seeds + 1, opts).tokens
    assert not torch.allclose(full, other)
