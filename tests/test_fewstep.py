"""Few-step methods on real runs: rfpp's pieces, the DiT's second time input, pair datasets (`genlab reflow`), and
the reflow, SlimFlow and CTM tasks trained from the session's smoke run as their teacher (a few steps each)."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from analytic import gaussian_exact
from safetensors.torch import load_file
from tiny import TINY, generator_run

from genlab import config, registry
from genlab.cli import main
from genlab.config import ConfigError, RunConfig
from genlab.data.pairs import PairDataset
from genlab.generators.dit import DiT, latent_spec
from genlab.generators.objectives.rfpp import pseudo_huber, u_shaped_t
from genlab.nn import per_sample_randn
from genlab.pipeline import Pipeline
from genlab.samplers import integrate
from genlab.tasks import train_run

CLASSES = [str(i) for i in range(10)]


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- pieces


def test_u_shaped_timesteps_put_mass_at_both_ends():
    u, flip = torch.rand(20000, generator=torch.Generator().manual_seed(0)), torch.rand(20000)
    t = u_shaped_t(u, flip)
    assert 1e-5 <= t.min() and t.max() <= 1 - 1e-5
    ends, middle = ((t < 0.1) | (t > 0.9)).float().mean(), ((t > 0.4) & (t < 0.6)).float().mean()
    e = math.e
    assert abs(ends - (e**4 - e**3.6 + e**0.4 - 1) / (e**4 - 1)) < 0.01  # density ∝ e^{4t}, mirrored: 0.345
    assert abs(middle - (e**2.4 - e**1.6) / (e**4 - 1)) < 0.01  # 0.113 (uniform: 0.2)
    assert abs((t > 0.5).float().mean() - 0.5) < 0.02  # symmetric


def test_pseudo_huber_is_l2_like_near_zero_and_l1_like_far():
    a = torch.zeros(2, 3, 4, 4)
    c = 0.00054 * math.sqrt(48)
    small, big = torch.full_like(a, 1e-5), torch.full_like(a, 10.0)
    assert torch.allclose(pseudo_huber(small, a), (48 * 1e-10) / (2 * c) * torch.ones(2), rtol=1e-2)
    assert torch.allclose(pseudo_huber(big, a), torch.full((2,), math.sqrt(48) * 10 - c), rtol=1e-4)


def test_rfpp_sampler_is_exact_on_a_straight_flow_and_euler_at_one_step():
    noise = torch.randn(64, 1, 1, 1, dtype=torch.float64)
    straight = lambda x, t: noise - gaussian_exact(noise)  # noqa: E731  (the 2-RF of the Gaussian: constant)
    for steps in (1, 2, 5):
        assert torch.allclose(integrate("rfpp", straight, noise, steps=steps).x, gaussian_exact(noise))
    v = lambda x, t: torch.sin(3 * x) + t.view(-1, 1, 1, 1)  # noqa: E731
    assert torch.allclose(integrate("rfpp", v, noise, steps=1).x, integrate("euler", v, noise, steps=1).x)
    assert not torch.allclose(integrate("rfpp", v, noise, steps=3).x, integrate("euler", v, noise, steps=3).x)


def test_dit_second_time_input_is_off_by_default_and_starts_as_the_one_time_dit():
    spec = latent_spec(3, 8)
    one = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2), spec=spec, num_classes=3)
    two = DiT(DiT.Config(depth=1, hidden_size=32, num_heads=2, patch_size=2, time_inputs=2), spec=spec, num_classes=3)
    assert not any(k.startswith("s_embedder") for k in one.state_dict())
    for p in one.parameters():  # non-zero outputs, so the comparison means something
        torch.nn.init.normal_(p, std=0.05)
    two.load_state_dict(one.state_dict(), strict=False)
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([0, 3])
    assert torch.allclose(one(x, t, y), two(x, t, y, torch.rand(2)))  # zero-initialised s embedding
    with pytest.raises(ValueError, match="one time input"):
        one(x, t, y, t)


@pytest.mark.parametrize("name", ["rfpp", "ctm"])
def test_objective_contract(name):
    data = generator_run("dit")
    data["objective"] = {"name": name, **TINY["objective"][name]}
    torch.manual_seed(0)
    pipe = Pipeline.from_config(RunConfig.from_dict(data), CLASSES)
    tokens = pipe.tokenizer.encode(torch.rand(4, 3, 16, 16) * 2 - 1)
    out = pipe.generator.loss(tokens, torch.arange(4), torch.arange(4))
    out["loss"].backward()
    assert math.isfinite(out["loss"].item()) and set(type(pipe.generator).LOG_KEYS) <= set(out)
    # per-sample randomness: the loss of a batch is the mean of its halves' losses
    halves = [pipe.generator.loss(tokens[i : i + 2], torch.arange(i, i + 2), torch.arange(i, i + 2))["loss"]
              for i in (0, 2)]  # fmt: skip
    assert torch.allclose(out["loss"], sum(halves) / 2, rtol=1e-5)
    pipe.eval()
    a = pipe.generate([1, 2, 3], seed=5, options={"steps": 2})
    b = pipe.generate([1, 2, 3], seed=5, options={"steps": 2}, batch_size=1)
    assert a.nfe == 2 and torch.allclose(a.images, b.images, atol=1e-6)
    assert registry.get("objective", name).SampleOptions is type(pipe.sample_options())


# ----------------------------------------------------------------------------- pairs


def test_genlab_reflow_writes_verified_resumable_pairs_from_the_teacher(smoke_run, tmp_path, capsys):
    out = tmp_path / "pairs"
    args = ["reflow", "--run", str(smoke_run), "--n", "6", "--sampler", "euler", "--steps", "2", "--shard-size", "4",
            "--batch-size", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 6 and len(manifest["shards"]) == 2
    assert manifest["teacher"]["sha256"] == sha(smoke_run / "generator" / "model.safetensors")
    assert all(sha(out / e["file"]) == e["sha256"] for e in manifest["shards"])
    ds = PairDataset(out)
    b = ds.get_batch(torch.arange(6))
    seeds = torch.arange(6)
    assert torch.equal(b["label"], seeds % 10)
    assert torch.equal(b["noise"], per_sample_randn(seeds, (3, 16, 16), stream=0))
    teacher = Pipeline.load(smoke_run)
    v = lambda x, t: teacher.generator.backbone(x, t, b["label"])  # noqa: E731
    with torch.no_grad():  # each sample is the teacher's ODE solution from exactly its noise
        assert torch.allclose(b["tokens"], integrate("euler", v, b["noise"], steps=2).x, atol=1e-5)
    first = sha(out / "shard_00001.safetensors")
    (out / "shard_00001.safetensors").unlink()
    (out / "manifest.json").unlink()
    assert main(args) == 0 and sha(out / "shard_00001.safetensors") == first  # resumed: the same pairs
    assert main([*args[:-2], "--seed", "1", "--out", str(out)]) == 2  # other pairs: refused, not mixed
    assert "made differently" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tasks


def quick(preset: str, teacher, *extra: str):
    return config.load(preset, [f"teacher.run={teacher}", "train.steps=2", "train.batch_size=4", *extra])


def test_reflow_trains_a_two_rectified_flow_from_the_teacher(smoke_run, tmp_path):
    cfg = quick("smoke-reflow", smoke_run, "reflow.n=4", "reflow.steps=2")
    out = train_run(cfg, tmp_path / "rf")
    pipe = Pipeline.load(out)
    run_cfg = pipe.cfg.to_dict()
    assert run_cfg["task"] == "reflow" and run_cfg["teacher"]["sha256"] == sha(smoke_run / "generator" /
                                                                               "model.safetensors")  # fmt: skip
    assert run_cfg["data"] == Pipeline.load(smoke_run).cfg.to_dict()["data"]  # the teacher's tokens
    assert len(PairDataset(out / "pairs")) == 4
    res = pipe.generate([0, 1], options={"steps": 1})
    assert res.nfe == 1 and torch.isfinite(res.images).all()
    # one-step distillation of that 2-rectified flow, on its own pairs
    dist = train_run(quick("smoke-reflow", out, "reflow.n=4", "reflow.steps=2", "reflow.distill=true"),
                     tmp_path / "distill")  # fmt: skip
    assert Pipeline.load(dist).cfg.reflow.distill


def test_reflow_with_the_lpips_huber_premetric_decodes_through_the_perceptual_network(smoke_run, tmp_path, capsys):
    cfg = quick("smoke-reflow", smoke_run, "reflow.n=4", "reflow.steps=2", "objective.premetric=lpips_huber",
                "reflow.perceptual=random-conv", "reflow.perceptual_resize=32", "reflow.distill=true")  # fmt: skip
    out = train_run(cfg, tmp_path / "lp")
    assert Pipeline.load(out).cfg.objective.cfg.premetric == "lpips_huber"
    auto = quick("smoke-reflow", smoke_run, "reflow.n=4", "reflow.steps=2", "objective.premetric=lpips_huber",
                 "reflow.lpips_path=/nonexistent", "reflow.perceptual_resize=0")  # fmt: skip
    assert auto.reflow.perceptual == "auto"  # the offline fallback is chosen (and said) at train time
    capsys.readouterr()
    assert main(["reflow", "--run", str(smoke_run), "--n", "0", "--out", str(tmp_path / "p")]) == 2
    assert "--n" in capsys.readouterr().err


def test_ctm_starts_as_the_teachers_euler_jump_and_samples_with_gamma(smoke_run, tmp_path):
    from genlab.tasks.fewstep import _load_teacher, build_student

    cfg = quick("smoke-ctm", smoke_run)
    teacher = _load_teacher(cfg.teacher)
    student = build_student(cfg.resolve(teacher), teacher)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    one, zero = torch.ones(2), torch.zeros(2)
    with torch.no_grad():
        jump = student.generator.jump(student.generator.backbone, x, one, zero, y)
        assert torch.allclose(jump, x - teacher.pipeline.generator.backbone(x, one, y), atol=1e-5)
    out = train_run(cfg, tmp_path / "ctm")
    pipe = Pipeline.load(out)
    assert pipe.weights.s_embedder is not None
    for steps, gamma in ((1, 0.0), (3, 0.0), (3, 1.0)):
        res = pipe.generate([0, 1], options={"steps": steps, "gamma": gamma})
        assert res.nfe == steps and torch.isfinite(res.images).all()
    png = tmp_path / "ctm.png"
    assert main(["sample", "--run", str(out), "--steps", "2", "--gamma", "0.5", "--n", "1", "--out", str(png)]) == 0
    assert png.is_file()
    assert main(["sample", "--run", str(out), "--gamma", "2", "--n", "1", "--out", str(png)]) == 2


def test_slimflow_trains_a_smaller_student_then_distils_it(smoke_run, tmp_path):
    out = train_run(quick("smoke-slimflow", smoke_run, "slimflow.n=4", "slimflow.steps=2"), tmp_path / "slim")
    small, big = (sum(p.numel() for p in Pipeline.load(r).weights.parameters()) for r in (out, smoke_run))
    assert small < big / 4
    cfg = quick("smoke-slimflow", out, "slimflow.n=4", "slimflow.steps=2", "slimflow.stage=distill",
                "slimflow.init=teacher")  # fmt: skip
    one = train_run(cfg, tmp_path / "slim-1")
    assert Pipeline.load(one).generate([3], options={"steps": 1}).nfe == 1
    metrics = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert any("guide" in m for m in metrics)


def test_a_student_run_resumes_where_it_stopped(smoke_run, tmp_path, capsys):
    """The run-folder guard compares a resume with the resolved config the run wrote (the task's ``record``); it
    compared the bare preset and refused every few-step resume. (CTM's: tests/test_ctm_gan.py.)"""
    args = ("smoke-reflow", smoke_run, "reflow.n=4", "reflow.steps=2")
    ref = train_run(quick(*args, "train.steps=4"), tmp_path / "ref")
    train_run(quick(*args), tmp_path / "run")
    capsys.readouterr()
    run = train_run(quick(*args, "train.steps=4"), tmp_path / "run", resume="auto")
    assert "at step 2" in capsys.readouterr().out
    a, b = (load_file(str(r / "generator" / "model.safetensors")) for r in (ref, run))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_errors_are_one_line(smoke_run, tmp_path, capsys):
    with pytest.raises(ConfigError, match="teacher.run"):
        train_run(quick("smoke-ctm", tmp_path / "nothing"), tmp_path / "x")
    cfg = quick("smoke-reflow", smoke_run, "data.name=digits", "data.resolution=8")
    with pytest.raises(ConfigError, match="the student makes the teacher's tokens"):
        train_run(cfg, tmp_path / "y")
    assert main(["train", "--preset", "smoke-reflow", "--out", str(tmp_path / "z"), "teacher.run="]) == 2
    assert "teacher.run" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["smoke-ctm"])  # reflow's loss: the batch-split check of test_objective_contract
def test_student_weights_do_not_depend_on_the_thread_count(preset, smoke_run, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from safetensors.torch import load_file

    def trained(threads: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": threads}
        out = tmp_path / f"t{threads}"
        args = ["train", "--preset", preset, "--out", str(out), f"teacher.run={smoke_run}", "train.steps=3",
                "train.batch_size=8", "reflow.n=8" if preset == "smoke-reflow" else "objective.solver_steps=4"]  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "genlab", *args], env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return load_file(str(out / "generator" / "model.safetensors"))

    one, two = trained("1"), trained("2")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
