"""CTM's optional GAN term (``ctm.gan``): the adaptive weight by hand, the delayed start, each optimizer's own
gradients, a resumed run equal to an uninterrupted one, weights independent of the thread count."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY, generator_run

from genlab import config, registry
from genlab.cli import main
from genlab.config import ConfigError, RunConfig
from genlab.pipeline import Pipeline
from genlab.tasks import train_run
from genlab.tasks.ctm import CTMAdversary, CTMConfig, CTMGANConfig, CTMTraining, gan_weight
from genlab.train import checkpoint

CLASSES = [str(i) for i in range(10)]


def tiny_ctm(dsm_weight: float = 0.0):
    """A tiny CTM (DiT on 2x2-patched 16x16 pixels, tokens (12, 8, 8)) with its EMA target, and a batch of 4."""
    run = generator_run("dit")
    run["objective"] = {"name": "ctm", **TINY["objective"]["ctm"], "dsm_weight": dsm_weight}
    torch.manual_seed(0)
    pipe = Pipeline.from_config(RunConfig.from_dict(run), CLASSES)
    pipe.generator.attach("target", copy.deepcopy(pipe.generator.backbone).requires_grad_(False))
    ds = registry.get("dataset", "digits")(registry.get("dataset", "digits").Config(resolution=16))
    batch = ds.get_batch(torch.arange(4))
    return pipe, pipe.tokenizer.encode(batch["image"]), batch["label"], torch.arange(4) + 7


def test_gan_weight_is_the_clipped_ratio_of_gradient_norms_by_hand():
    W = torch.tensor([[2.0, -1.0]], requires_grad=True)
    ctm = 3 * W.sum()  # gradient 3 everywhere: norm 3 sqrt(2)
    for scale, expected in ((1.0, 3 * math.sqrt(2) / (2 * math.sqrt(5) + 1e-4)), (1e-3, 10.0), (1e4, 0.01)):
        gan = scale * (W**2).sum()  # gradient 2 scale W: norm 2 scale sqrt(5)
        got = gan_weight(ctm, gan, W, 0.01, 10.0)
        assert not got.requires_grad and got.item() == pytest.approx(expected, rel=1e-6)
    assert 0.01 < 3 * math.sqrt(2) / (2 * math.sqrt(5)) < 10  # the first case is inside the clip


def test_the_gan_term_is_zero_before_its_start_and_weighted_adaptively_after():
    pipe, x0, y, seeds = tiny_ctm()
    gen, tok = pipe.generator, pipe.tokenizer
    base = gen.loss(x0, y, seeds)
    adv = CTMAdversary(CTMGANConfig(weight=0.5, start=3, disc_ch=8), tok, gen.spec, 16)
    seen = {}

    def spy(**kw):
        seen.update(kw)
        return adv(**kw)

    gen.attach("adversary", spy)
    adv.step = 2
    before = gen.loss(x0, y, seeds)
    assert torch.equal(before["loss"], base["loss"]) and before["gan"].item() == 0 and before["gan_weight"] == 0
    assert before["disc"].item() > 0 and before["discriminator_loss"].requires_grad  # D trains from step 0
    adv.step = 3
    after = gen.loss(x0, y, seeds)
    assert after["gan"].item() != 0
    torch.testing.assert_close(after["loss"].detach(), base["loss"].detach() + after["gan"])
    # by hand: L_CTM's and L_GAN's gradient norms at the DiT's output projection, CTM's clip
    W = gen.backbone.final_layer.linear.weight
    assert seen["last_layer"] is W and seen["fake"].shape == x0.shape
    torch.testing.assert_close(seen["ctm"].detach(), base["ctm"])  # the numerator is L_CTM (not DSM, not the sum)
    g = -adv.discriminator(tok.decode(seen["fake"])).mean()  # hinge generator term on the decoded jumps
    n_ctm = torch.autograd.grad(seen["ctm"], W, retain_graph=True)[0].norm()
    n_gan = torch.autograd.grad(g, W, retain_graph=True)[0].norm()
    lam = (n_ctm / (n_gan + 1e-4)).clamp(0.01, 10.0)
    torch.testing.assert_close(after["gan_weight"], lam)
    torch.testing.assert_close(after["gan"], (0.5 * lam * g).detach())


def test_each_optimizer_gets_only_its_own_gradients():
    pipe, x0, y, seeds = tiny_ctm()
    gen = pipe.generator
    adv = CTMAdversary(CTMGANConfig(weight=1.0, disc_ch=8), pipe.tokenizer, gen.spec, 16)
    gen.attach("adversary", adv)
    out = gen.loss(x0, y, seeds)
    out["loss"].backward(retain_graph=True)
    assert all(p.grad is None for p in adv.discriminator.parameters())
    assert gen.backbone.final_layer.linear.weight.grad.abs().sum() > 0
    gen.backbone.zero_grad(set_to_none=True)
    out["discriminator_loss"].backward()
    assert all(p.grad is None for p in gen.backbone.parameters())
    assert all(p.grad is not None for p in adv.discriminator.parameters())


def test_off_by_default_and_bad_settings_are_one_line(tmp_path, capsys):
    pipe, x0, y, seeds = tiny_ctm()
    assert CTMConfig().gan.weight == 0
    model = CTMTraining(pipe.tokenizer, pipe.generator, copy.deepcopy(pipe.generator.backbone), CTMConfig().gan, 16)
    assert model.adversary is None and model.discriminator is None and "adversary" not in pipe.generator.helpers
    assert model.log_keys == ("ctm", "dsm")
    for bad in ("ctm.gan.weight=nan", "ctm.gan.weight=-1", "ctm.gan.min_weight=20", "ctm.gan.space=latents"):
        with pytest.raises(ConfigError, match="gan"):
            config.load("smoke-ctm", [bad])
    with pytest.raises(ConfigError, match="at most 2"):
        CTMAdversary(CTMGANConfig(weight=1.0, disc_layers=3), pipe.tokenizer, pipe.generator.spec, 16)
    with pytest.raises(ConfigError, match="at most 1"):  # (12, 8, 8) token grids
        CTMAdversary(CTMGANConfig(weight=1.0, space="tokens", disc_layers=2), None, pipe.generator.spec, 16)
    tokens = CTMAdversary(CTMGANConfig(weight=1.0, space="tokens", disc_layers=1), None, pipe.generator.spec, 16)
    assert tokens.discriminator.main[0].in_channels == 12
    capsys.readouterr()
    assert main(["train", "--preset", "smoke-ctm", "ctm.gan.weight=inf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "ctm.gan" in err and "Traceback" not in err and err.strip().count("\n") == 0


def quick(teacher, *extra: str):
    return config.load("smoke-ctm", [f"teacher.run={teacher}", "train.batch_size=4", "train.log_every=1",
                                     "ctm.gan.weight=1", "ctm.gan.start=1", "ctm.gan.disc_ch=8", *extra])  # fmt: skip


def trained_state(out):
    """The exported generator and the final checkpoint's model (discriminator included) and optimizers."""
    last = checkpoint.latest_checkpoint(out / "checkpoints")
    files = ("model.safetensors", "optimizer.safetensors", "optimizer_1.safetensors")
    return load_file(str(out / "generator" / "model.safetensors")), [load_file(str(last / f)) for f in files]


def test_a_resumed_gan_run_equals_an_uninterrupted_one(smoke_run, tmp_path, capsys):
    ref = train_run(quick(smoke_run, "train.steps=4"), tmp_path / "ref")
    metrics = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert [m["gan"] == 0 for m in metrics] == [True, False, False, False]  # start 1: off at step 0 only
    assert all(m["disc"] > 0 for m in metrics) and metrics[1]["gan_weight"] > 0
    train_run(quick(smoke_run, "train.steps=2"), tmp_path / "run")
    capsys.readouterr()
    resumed = train_run(quick(smoke_run, "train.steps=4"), tmp_path / "run", resume="auto")
    assert "at step 2" in capsys.readouterr().out  # resumed, not started over
    (a, a_ckpt), (b, b_ckpt) = trained_state(ref), trained_state(resumed)
    assert any(k.startswith("adversary.discriminator.") for k in a_ckpt[0])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(a_ckpt, b_ckpt):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_gan_weights_do_not_depend_on_the_thread_count(smoke_run, tmp_path):
    def trained(threads: int):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = train_run(quick(smoke_run, "train.steps=3"), tmp_path / f"t{threads}")
        finally:
            torch.set_num_threads(before)
        return trained_state(out)

    (one, one_ckpt), (two, two_ckpt) = trained(1), trained(2)
    assert all(torch.equal(one[k], two[k]) for k in one)
    model_1, model_2 = one_ckpt[0], two_ckpt[0]
    differ = [k for k in model_1 if not torch.equal(model_1[k], model_2[k])]
    assert not differ, differ[:5]
