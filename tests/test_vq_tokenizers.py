"""2-D discrete tokenizers: the contract for each, paper presets' parameter counts, losses, training runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab import config
from genlab.cli import main
from genlab.config import ConfigError, from_dict
from genlab.evals.evaluate import build_dataset
from genlab.evals.recon import reconstruction_metrics
from genlab.pipeline import load_tokenizer
from genlab.tasks import train_run
from genlab.tasks.tokenizer import TokenizerTraining
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.losses import LPIPS, LossConfig, TokenizerCriterion
from genlab.tokenizers.vq import MultiScaleVQTokenizer, RQVAETokenizer, VQGANTokenizer

ROOT = Path(__file__).resolve().parents[1]
NET = {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 8, "norm_groups": 8}
LOSS = {
    "perceptual": "random-conv",
    "disc_weight": 0.5,
    "disc_start": 3,
    "disc_train_start": 1,
    "disc_layers": 2,
    "disc_ch": 8,
}
TINY = {
    "vq": (VQGANTokenizer, {"name": "vq", "codebook_size": 32, "l2_norm": True, "code_dim": 2}),
    "fsq": (VQGANTokenizer, {"name": "fsq", "levels": [5, 3, 3]}),
    "lfq": (VQGANTokenizer, {"name": "lfq", "bits": 4}),
    "rvq": (RQVAETokenizer, {"name": "rvq", "depth": 3, "vq": {"codebook_size": 16, "ema_decay": 0.9}}),
    "msvq": (MultiScaleVQTokenizer, {"name": "msvq", "scales": [1, 2, 4, 8], "vq": {"codebook_size": 16}}),
}


def tiny(name, **loss):
    cls, q = TINY[name]
    cfg = from_dict(cls.Config, {"net": NET, "embed_dim": 4, "quantizer": q, "loss": {**LOSS, **loss}}, "tokenizer")
    torch.manual_seed(0)
    return cls(cfg, resolution=16)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tokenizer_contract(name):
    tok = tiny(name).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = tok.encode(x)
    spec = tok.token_spec
    assert spec.code_dim == 4  # embed_dim: the channels indices_to_codes gives
    if spec.kind == "multiscale":
        assert [tuple(t.shape) for t in tokens] == [(2, s, s) for s in spec.scales] and spec.shape == (8, 8)
    else:
        assert tuple(tokens.shape) == (2, *spec.shape) and tokens.max() < spec.vocab_size
    images = tok.decode(tokens)
    assert images.shape == x.shape
    with torch.no_grad():
        recon, q = tok.reconstruct(x)
        assert torch.allclose(tok.indices_to_codes(tokens), q.codes, atol=1e-5)
        assert torch.allclose(images, recon, atol=1e-5)


def test_straight_through_gradients_reach_the_encoder():
    tok = tiny("vq", disc_weight=0.0, perceptual="none")
    out = tok.loss({"image": torch.rand(2, 3, 16, 16) * 2 - 1}, step=0)
    out["loss"].backward()
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0 and tok.decoder.conv_out.weight.grad.abs().sum() > 0
    assert 0 < out["usage"] <= 1 and out["perplexity"] >= 1


def test_rvq_tokenizer_decodes_from_partial_depth():
    tok = tiny("rvq").eval()
    tokens = tok.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert tokens.shape == (2, 8, 8, 3)
    one, full = tok.decode(tokens, depth=1), tok.decode(tokens)
    assert one.shape == full.shape and not torch.allclose(one, full)


def test_multiscale_tokenizer_decodes_any_prefix_and_ground_truth_maps():
    tok = tiny("msvq").eval()
    tokens = tok.encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    for k in range(1, 5):
        assert tok.decode(tokens[:k]).shape == (2, 3, 16, 16)
    maps = [torch.randint(16, (2, s, s)) for s in (1, 2, 4, 8)]  # e.g. maps a generator predicted, or ground truth
    assert torch.isfinite(tok.decode(maps)).all()
    with pytest.raises(TokenizerError, match="scale 1 is 2x2"):
        tok.decode([maps[0], maps[2]])
    inputs = tok.quantizer.teacher_forcing_inputs(tokens)
    assert [tuple(i.shape) for i in inputs] == [(2, 4, s, s) for s in (2, 4, 8)]


def test_wrong_quantizer_and_groupnorm_widths_are_config_errors():
    with pytest.raises(ConfigError, match="takes rvq"):
        from_dict(RQVAETokenizer.Config, {"quantizer": {"name": "vq"}}, "tokenizer")
    with pytest.raises(ConfigError, match="multiples of norm_groups=32"):
        from_dict(VQGANTokenizer.Config, {"net": {"ch": 24}}, "tokenizer")
    with pytest.raises(ConfigError, match="tokenizer.quantizer.codebook_sise"):
        config.load("smoke-vq", ["tokenizer.quantizer.codebook_sise=3"])
    with pytest.raises(TokenizerError, match="last scale"):
        MultiScaleVQTokenizer(from_dict(MultiScaleVQTokenizer.Config, {"net": NET}, "tokenizer"), resolution=16)


# ----------------------------------------------------------------------------- losses


def test_gan_schedule_and_disjoint_gradients():
    tok = tiny("vq")
    crit = tok.training_losses()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    before = tok.loss({"image": x}, 0, crit)  # D not yet trained, no GAN term
    assert before["discriminator_loss"] == 0 and "gan" not in before
    early = tok.loss({"image": x}, 1, crit)  # D trains before its generator term switches on
    assert early["discriminator_loss"] > 0 and "gan" not in early
    late = tok.loss({"image": x}, 3, crit)
    assert "gan" in late and late["gan_weight"] > 0
    D = crit.discriminator
    late["loss"].backward(retain_graph=True)
    assert all(p.grad is None for p in D.parameters()), "the generator's loss must not train the discriminator"
    assert tok.encoder.conv_in.weight.grad is not None
    tok.zero_grad()
    late["discriminator_loss"].backward()
    assert all(p.grad is None for p in tok.parameters()), "the discriminator's loss must not train the tokenizer"
    assert all(p.grad is not None for p in D.parameters())


def test_adaptive_weight_balances_gradient_norms():
    from genlab.tokenizers.losses import adaptive_weight

    w = torch.ones(3, requires_grad=True)
    assert adaptive_weight((2 * w).sum(), (0.5 * w).sum(), w).item() == pytest.approx(4.0, rel=1e-3)


def test_lpips_needs_local_weights_and_loads_the_lpips_key_names(tmp_path):
    with pytest.raises(TokenizerError, match="lpips needs local weights"):
        TokenizerCriterion(LossConfig(perceptual="lpips", lpips_path=str(tmp_path / "none.safetensors")))
    from safetensors.torch import save_file

    with torch.device("meta"):
        keys = list(LPIPS().state_dict())
    assert "net.slice1.0.weight" in keys and "lin0.model.1.weight" in keys and "scaling_layer.shift" in keys
    torch.manual_seed(0)
    ref = LPIPS()  # random weights, saved and loaded as a user's converted file would be
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "lpips.safetensors"))
    net = LPIPS.from_file(str(tmp_path / "lpips.safetensors"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert net(x, x).item() == 0 and net(x, -x).item() != 0


# ----------------------------------------------------------------------------- presets


# Parameter counts of the reference implementations, counted by instantiating each repository's model class
# (LlamaGen tokenizer_image/vq_model.py VQ_16; bytedance/1d-tokenizer maskgit_vqgan.py Encoder+Decoder+
# VectorQuantizer(1024, 256); VAR models/vqvae.py VQVAE(ch=160, z=32, vocab 4096); RQ-VAE rqvae.py with
# in256-rqvae-8x8x4.yaml, codebook included).
REFERENCE = {
    "imagenet256/vq-f16": (71_883_403, 71_883_403),
    "imagenet256/maskgit-vqgan": (54_515_587, 54_449_283),
    "imagenet256/rqvae-8x8x4": (104_402_051, 104_401_795),
    "imagenet256/var-vqvae": (108_948_355, 108_948_355),
}


@pytest.mark.parametrize("preset", sorted(REFERENCE))
def test_paper_presets_match_the_reference_parameter_counts(preset):
    cfg = config.load(preset)
    with torch.device("meta"):
        tok = cfg.tokenizer.build(resolution=256)
    n = sum(p.numel() for p in tok.parameters())
    reference, ours = REFERENCE[preset]
    assert n == ours and abs(n - reference) / reference < 0.02


def test_tokenizer_runs_have_no_generator_section():
    cfg = config.load("smoke-vq")
    assert cfg.task == "tokenizer" and cfg.generator is None
    assert config.RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="has no generator section"):
        config.RunConfig.from_dict({**cfg.to_dict(), "generator": {"name": "dit"}})
    assert "task" not in config.load("smoke").to_dict()


# ----------------------------------------------------------------------------- training


ARGS = [
    "train.steps=12",
    "train.batch_size=16",
    "tokenizer.loss.disc_start=6",
    "train.log_every=4",
    "sample.per_class=4",
]


def test_smoke_vq_trains_exports_evaluates_and_resumes_bitwise(tmp_path, capsys):
    cfg = config.load(
        "smoke-vq", [*ARGS, "train.checkpoint_every=6", "train.keep_checkpoints=5", "data.val_fraction=0.25"]
    )
    run = train_run(cfg, tmp_path / "a")
    assert (run / "samples" / "step_0000012.png").is_file()
    metrics = json.loads((run / "recon.json").read_text())
    assert metrics["psnr"] > 10 and 0 < metrics["codebook_usage"] <= 1
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"rec", "usage", "perplexity", "gan", "disc"} <= set(logs[-1]) and logs[-1]["gan"] != 0
    _, tok = load_tokenizer(run)
    assert reconstruction_metrics(tok, torch.zeros(2, 3, 16, 16))["n"] == 2
    assert main(["eval", "--tokenizer", str(run), "--n", "40", "--no-rfid", "--json"]) == 0  # data from the run
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"psnr", "ssim", "codebook_usage", "codebook_perplexity"} <= set(result)
    assert 0 < result["codebook_usage"] <= 1 and -1 <= result["ssim"] <= 1
    assert main(["eval", "--tokenizer", str(run), "--no-rfid", "--json"]) == 0  # the run's val split, its options
    val = build_dataset("digits", 16, "val", {"val_fraction": 0.25})
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == len(val) > 400
    # resume from the step-6 checkpoint (both optimizers, the discriminator, the codebook statistics)
    b = tmp_path / "b"
    (b / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step_0000006", b / "checkpoints" / "step_0000006")
    train_run(cfg, b, resume="auto")
    a_state = load_file(str(run / "checkpoints" / "step_0000012" / "model.safetensors"))
    b_state = load_file(str(b / "checkpoints" / "step_0000012" / "model.safetensors"))
    assert a_state.keys() == b_state.keys() and any("discriminator" in k for k in a_state)
    for k in a_state:
        assert torch.equal(a_state[k], b_state[k]), k


def test_tokenizer_task_exposes_the_discriminator():
    task = TokenizerTraining(tiny("vq"))
    assert task.discriminator is task.losses.discriminator
    assert {"gan", "disc", "perceptual"} <= set(task.log_keys)
    task.set_step(0)
    out = task({"image": torch.rand(2, 3, 16, 16) * 2 - 1})
    assert out["gan"] == 0 and out["discriminator_loss"] == 0


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun missing",
)
def test_smoke_vq_in_two_processes_matches_one(tmp_path):
    """Generator and discriminator optimizers, the adaptive GAN weight, codebook statistics and dead-code
    re-seeding: 2 processes at the same global batch give the weights of 1 (a few steps: later steps amplify
    float rounding through code assignments)."""
    args = ["--preset", "smoke-vq", "train.steps=3", "tokenizer.loss.disc_start=1", "train.log_every=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    for n in (1, 2):
        cmd = [torchrun, "--standalone", "--nproc_per_node", str(n), "-m", "genlab", "train", *args]
        done = subprocess.run([*cmd, "--out", str(tmp_path / str(n))], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (load_file(str(tmp_path / n / "checkpoints" / "step_0000003" / "model.safetensors")) for n in "12")
    assert any("discriminator" in k for k in a) and any("codebook" in k for k in a)
    diffs = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    assert max(diffs.values()) < 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:3]
