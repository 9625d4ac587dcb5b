"""Samplers against flows with known answers: orders of convergence, NFE, guidance identities, seeds."""

import math

import numpy as np
import pytest
import torch
from analytic import gaussian_exact, gaussian_velocity, mixture_velocity, rk4

from genlab import registry
from genlab.generators.dit import DiT, latent_spec
from genlab.generators.objectives.flow import FlowSampleOptions, RectifiedFlow
from genlab.generators.refiner import VelocityRefiner
from genlab.samplers import (
    GUIDANCE_SCHEDULES,
    SCHEDULES,
    Blocks,
    declared_networks,
    guided,
    integrate,
    names,
    option_names,
    timesteps,
)  # fmt: skip
from genlab.samplers.dpm_solver import dpm_pp_2m


def _noise(n=256, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def problems():
    """(velocity, noise, exact endpoint) for the Gaussian (exact map) and the 2-D mixture (fine RK4)."""
    noise = _noise()
    return {
        "gaussian": (gaussian_velocity, noise, gaussian_exact(noise)),
        "mixture": (mixture_velocity, noise, rk4(mixture_velocity, noise, 256)),
    }


def rms(a, b):
    return (a - b).pow(2).mean().sqrt().item()


def error(problem, sampler, steps, **kw):
    velocity, noise, exact = problem
    res = integrate(sampler, velocity, noise, steps=steps, **kw)
    return rms(res.x, exact), res.nfe


def order(problem, sampler, steps, **kw):
    errs = [error(problem, sampler, n, **kw)[0] for n in steps]
    return -np.polyfit(np.log(steps), np.log(errs), 1)[0], errs


# ----------------------------------------------------------------------------- orders and NFE


@pytest.mark.parametrize("flow", ["gaussian", "mixture"])
def test_euler_is_first_order_and_heun_second_order(problems, flow):
    p = problems[flow]
    k, errs = order(p, "euler", [16, 32, 64, 128, 256])
    assert 0.85 < k < 1.2, f"Euler order {k:.2f} on the {flow}: {errs}"
    k, errs = order(p, "heun", [8, 16, 32, 64])
    assert 1.8 < k < 2.3, f"Heun order {k:.2f} on the {flow}: {errs}"
    assert error(p, "heun", 5)[1] == 9 and error(p, "euler", 5)[1] == 5  # Heun's last step is an Euler step
    k, errs = order(p, "heun", [8, 16, 32, 64], last_step="heun")  # the textbook method, corrector at t = 0
    assert 1.8 < k < 2.3 and error(p, "heun", 5, last_step="heun")[1] == 10, f"Heun order {k:.2f}: {errs}"


@pytest.mark.parametrize("flow", ["gaussian", "mixture"])
@pytest.mark.parametrize("sampler", ["dpm++", "unipc"])
def test_multistep_solvers_reach_eulers_error_with_fewer_evaluations(problems, flow, sampler):
    p = problems[flow]
    target, nfe = error(p, "euler", 64)
    assert nfe == 64
    err, nfe = error(p, sampler, 16)
    assert nfe == 16 and err < target, f"{sampler} at 16 NFE: {err:.3g}; Euler at 64 NFE: {target:.3g}"


@pytest.mark.parametrize("sampler", ["dpm++", "unipc"])
def test_multistep_solvers_are_second_order_on_a_log_snr_friendly_schedule(problems, sampler):
    # on a uniform t grid the last steps are wide in log-SNR, which caps these solvers' observed order near 1.3;
    # on EDM's schedule (geometric near the data) they show their order 2
    k, errs = order(problems["gaussian"], sampler, [16, 32, 64, 128], schedule="edm")
    assert k > 1.7, f"{sampler} order {k:.2f} on the EDM schedule: {errs}"


def test_our_dpm_solver_equals_diffusers_step_for_step():
    from diffusers import DPMSolverMultistepScheduler

    noise = _noise(64)
    for steps in (3, 10, 20):
        sched = DPMSolverMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0, solver_order=2
        )
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.double().tolist()  # diffusers' own flow schedule, 0.999 .. 0
        x = noise
        for i, step_t in enumerate(sched.timesteps):
            v = gaussian_velocity(x, x.new_full((len(x),), sigmas[i]))
            x = sched.step(v, step_t, x).prev_sample
        ours = dpm_pp_2m(gaussian_velocity, noise, sigmas)
        assert (ours - x).abs().max().item() < 1e-5, steps  # diffusers steps in float32


def test_pseudo_corrector_saves_evaluations_and_beats_euler(problems):
    for flow, p in problems.items():
        for steps in (8, 16, 32):
            err_p, nfe_p = error(p, "flowturbo", steps, blocks=f"P{steps}")
            err_h, nfe_h = error(p, "heun", steps)
            err_e, _ = error(p, "euler", nfe_p)  # Euler given the same number of evaluations
            assert nfe_p == steps < nfe_h == 2 * steps - 1  # both end with an Euler step
            assert err_p < err_e, (flow, steps, err_p, err_e)
            err_same, nfe_same = error(p, "flowturbo", 2 * steps - 1, blocks=f"P{2 * steps - 1}")
            assert nfe_same == nfe_h and err_same < err_h, (flow, steps, err_same, err_h)  # better at equal NFE
        k, errs = order(p, "flowturbo", [8, 16, 32, 64], blocks=None)  # default blocks: H1 then P steps
        assert k > 1.7, (flow, k, errs)


def test_schedules():
    for name in SCHEDULES:
        for steps in (1, 2, 7, 32):
            ts = timesteps(steps, schedule=name)
            assert len(ts) == steps + 1 and ts[0] == 1 and ts[-1] == 0, (name, ts)
            assert bool((ts[:-1] > ts[1:]).all()), (name, ts)
    u = timesteps(4)
    assert torch.allclose(u, torch.tensor([1, 0.75, 0.5, 0.25, 0], dtype=torch.float64))
    shifted = timesteps(4, shift=3.0)
    assert torch.allclose(shifted[2], torch.tensor(0.75, dtype=torch.float64))  # 3 * 0.5 / (1 + 2 * 0.5)
    edm = timesteps(16, schedule="edm")
    assert abs(edm[-2] - 0.002 / 1.002) < 1e-9  # sigma_min = 0.002 in sigma = t / (1 - t)
    ln = timesteps(8, schedule="logit_normal")
    assert torch.allclose(ln[1:-1], 1 - ln[1:-1].flip(0))  # symmetric around t = 1/2 for m = 0
    with pytest.raises(ValueError, match="unknown schedule"):
        timesteps(4, schedule="cosine")
    with pytest.raises(ValueError):
        timesteps(0)


# ----------------------------------------------------------------------------- FlowTurbo


def test_blocks():
    assert str(Blocks.parse("h1p5r3")) == "H1P5R3" and Blocks.parse("P4") == Blocks(0, 4, 0)
    assert Blocks.default(9, refiner=True) == Blocks(1, 5, 3)  # the paper's default
    assert Blocks.default(9, refiner=False) == Blocks(1, 8, 0)
    assert Blocks.for_nfe(7, refiner=True) == Blocks(1, 5, 3)
    for nfe in (2, 4, 8, 16, 64):
        assert Blocks.for_nfe(nfe, refiner=True).nfe == Blocks.for_nfe(nfe, refiner=False).nfe == nfe
    assert Blocks.for_nfe(64, refiner=True) == Blocks(1, 62, 5) and Blocks.for_nfe(8, refiner=False) == Blocks(1, 7, 0)
    for bad in ("", "X3", "H1R2P1", "H0P0R0"):
        with pytest.raises(ValueError):
            Blocks.parse(bad)


def counting(fn):
    calls = []

    def wrapped(*args):
        calls.append(len(args[0]))
        return fn(*args)

    return wrapped, calls


def test_flowturbo_counts_evaluations_and_an_exact_refiner_turns_r_steps_into_heun(problems):
    velocity, noise, exact = problems["mixture"]
    v, v_calls = counting(velocity)
    r, r_calls = counting(lambda x, t, cached: velocity(x, t) - cached)  # the perfect refiner
    res = integrate("flowturbo", {"velocity": v, "refiner": r}, noise, steps=9)
    assert res.nfe == len(v_calls) == 7 and len(r_calls) == 5  # H1P5R3: 2 + 5, 2 * 3 - 1
    assert res.nfe_by_network == {"velocity": 7, "refiner": 5}
    # with the exact velocity change, a refiner step is a Heun step: H1R8 equals 9 Heun steps
    turbo = integrate("flowturbo", {"velocity": velocity, "refiner": r}, noise, steps=9, blocks="H1R8").x
    assert torch.allclose(turbo, integrate("heun", velocity, noise, steps=9).x, atol=1e-12)
    # a refiner that predicts no change keeps the velocity frozen: much worse than the exact one
    zero = {"velocity": velocity, "refiner": lambda x, t, c: torch.zeros_like(c)}
    lazy = integrate("flowturbo", zero, noise, steps=9, blocks="H1R8").x
    assert rms(lazy, exact) > 3 * rms(turbo, exact)
    r_only = integrate("flowturbo", {"velocity": v, "refiner": r}, noise, steps=3, blocks="R3")
    assert r_only.nfe == 1  # one base evaluation to have a velocity to refine
    with pytest.raises(ValueError, match="no velocity refiner"):
        integrate("flowturbo", velocity, noise, steps=9, blocks="H1P5R3")
    with pytest.raises(ValueError, match="take 9 steps"):
        integrate("flowturbo", {"velocity": velocity, "refiner": r}, noise, steps=8, blocks="H1P5R3")


# ----------------------------------------------------------------------------- guidance


def toy_net(x, t, y, *extra):
    """A class-conditional linear field: the unconditional class (9) pulls to 0, class c to c."""
    target = torch.where(y == 9, torch.zeros_like(y), y).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    out = x - target
    for e in extra:
        out = out + 0.1 * e
    return out


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm++", "unipc", "flowturbo"])
def test_cfg_interval_identities(sampler):
    x = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([1, 2, 3, 4])

    def run(scale, **kw):
        return integrate(sampler, guided(toy_net, y, 9, scale, **kw), x, steps=6).x

    plain, cond = run(2.5), run(1.0)
    assert not torch.allclose(plain, cond)
    assert torch.equal(run(2.5, interval=(0.0, 1.0)), plain)  # the whole range: plain CFG
    assert torch.equal(run(2.5, interval=(0.6, 0.4)), cond)  # an empty interval: conditional sampling
    assert torch.equal(run(2.5, interval=(0.41, 0.49)), cond)  # an interval holding none of the step times
    partial = run(2.5, interval=(0.3, 0.8))
    assert not torch.allclose(partial, plain) and not torch.allclose(partial, cond)
    assert torch.equal(run(2.5, schedule="constant"), plain)


def test_guidance_batches_cond_and_uncond_and_follows_its_schedule():
    net, calls = counting(toy_net)
    x, y = torch.zeros(3, 1, 1, 1, dtype=torch.float64), torch.tensor([1, 2, 3])
    for t_val in (1.0, 0.5, 0.0):
        t = torch.full((3,), t_val, dtype=torch.float64)
        for name in GUIDANCE_SCHEDULES:
            out = guided(net, y, 9, 3.0, schedule=name)(x, t)
            g = {"constant": 1.0, "linear": 1 - t_val, "cosine": (1 - math.cos(math.pi * (1 - t_val))) / 2}[name]
            w = 1 + 2.0 * g  # the scale at this t
            assert torch.allclose(out.flatten(), -w * y.double()), (name, t_val)  # uncond 0, cond -y
    assert set(calls) == {6}  # every call: one forward of cond + uncond together
    # extra inputs (a refiner's cached velocity) reach both halves
    v = torch.ones(3, 1, 1, 1, dtype=torch.float64)
    out = guided(toy_net, y, 9, 2.0)(x, torch.full((3,), 0.5, dtype=torch.float64), v)
    assert torch.allclose(out.flatten(), -2 * y.double() + 0.1)
    with pytest.raises(ValueError, match="unknown guidance schedule"):
        guided(toy_net, y, 9, 2.0, schedule="square")(x, torch.full((3,), 0.5))


# ----------------------------------------------------------------------------- seeds and batches


def tiny_flow_and_refiner():
    torch.manual_seed(0)
    dit = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2), spec=latent_spec(3, 8), num_classes=3)
    ref = VelocityRefiner(VelocityRefiner.Config(hidden_size=16, num_heads=2, patch_size=2),
                          spec=latent_spec(3, 8), num_classes=3)  # fmt: skip
    for p in [*dit.parameters(), *ref.parameters()]:
        torch.nn.init.normal_(p, std=0.05)
    return RectifiedFlow(RectifiedFlow.Config(), dit).eval(), ref.eval()


@pytest.mark.parametrize("sampler", names())
def test_every_sampler_is_independent_of_the_batch_size(sampler):
    flow, ref = tiny_flow_and_refiner()
    labels, seeds = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([10, 11, 12, 13, 14])
    opts = FlowSampleOptions(sampler=sampler, steps=6, cfg=2.0, cfg_interval=(0.2, 0.9))
    if sampler == "flowturbo":
        flow.attach("refiner", ref)
    full = flow.sample(labels, seeds, opts).tokens
    parts = torch.cat([flow.sample(labels[i : i + 2], seeds[i : i + 2], opts).tokens for i in (0, 2, 4)])
    assert torch.allclose(full, parts, atol=1e-5)
    assert not torch.allclose(full, flow.sample(labels, seeds + 1, opts).tokens)


# ----------------------------------------------------------------------------- declared networks and options


def test_samplers_get_the_networks_they_declare_each_counted(monkeypatch):
    def two_nets(jump, noise, ts, *, randn_like=None, callback=None, velocity=None, denoiser=None):
        """A toy consistency-style sampler: a jump to each time, then a velocity nudge."""
        ts = ts.tolist()
        x = noise
        for t, s in zip(ts[:-1], ts[1:]):
            x = jump(x, torch.full((len(x),), t), torch.full((len(x),), s))
        return x + 0 * velocity(x, torch.zeros(len(x))) if velocity is not None else x

    two_nets.networks, two_nets.optional_networks = ("jump",), ("velocity", "denoiser")
    monkeypatch.setitem(registry._ENTRIES["sampler"], "toy-jump", two_nets)
    jump = lambda x, t, s: x * (s / t).view(-1, 1)  # noqa: E731
    noise = torch.randn(3, 2)
    res = integrate("toy-jump", {"jump": jump, "velocity": lambda x, t: x, "refiner": None}, noise, steps=4)
    assert res.nfe == 4 and res.nfe_by_network == {"jump": 4, "velocity": 1}  # the refiner is not declared: not passed
    assert torch.equal(res.x, torch.zeros_like(noise))
    with pytest.raises(ValueError, match="needs the network.s. jump; this model has velocity"):
        integrate("toy-jump", lambda x, t: x, noise, steps=2)
    assert declared_networks(registry.get("sampler", "flowturbo")) == (("velocity",), ("refiner",))


def test_stochastic_samplers_get_per_sample_noise_from_the_objective(monkeypatch):
    calls = []

    def noisy(velocity, noise, ts, *, randn_like=None, callback=None):
        """Euler-Maruyama with a fixed diffusion: x <- x + h v + 0.3 sqrt|h| n."""
        ts, x = ts.tolist(), noise
        for t, s in zip(ts[:-1], ts[1:]):
            calls.append(1)
            x = x + (s - t) * velocity(x, torch.full((len(x),), t)) + 0.3 * abs(s - t) ** 0.5 * randn_like(x)
        return x

    monkeypatch.setitem(registry._ENTRIES["sampler"], "toy-sde", noisy)
    flow, _ = tiny_flow_and_refiner()
    labels, seeds = torch.tensor([0, 1, 2, 1]), torch.tensor([5, 6, 7, 8])
    opts = FlowSampleOptions(sampler="toy-sde", steps=4)
    full = flow.sample(labels, seeds, opts).tokens
    parts = torch.cat([flow.sample(labels[i : i + 1], seeds[i : i + 1], opts).tokens for i in range(4)])
    assert torch.allclose(full, parts, atol=1e-5)  # image i from seed i, noise included
    euler = flow.sample(labels, seeds, FlowSampleOptions(sampler="euler", steps=4)).tokens
    assert not torch.allclose(full, euler, atol=1e-3)  # the draws did reach the state


def test_a_sampler_owns_its_options():
    assert option_names(registry.get("sampler", "flowturbo")) == ("blocks",)
    assert option_names(registry.get("sampler", "euler")) == ()
    with pytest.raises(ValueError, match="blocks is an option of sampler flowturbo"):
        FlowSampleOptions(sampler="euler", blocks="H1P5R3", steps=9).validate()
    merged = FlowSampleOptions.merge(FlowSampleOptions(), {"sampler": "flowturbo", "blocks": "H1P5R3"})
    assert merged.steps == 9 and merged.sampler_values() == {"blocks": "H1P5R3"}
    assert FlowSampleOptions(sampler="euler").sampler_values() == {}
