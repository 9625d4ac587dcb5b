"""LightningDiT's VA-VAE (genlab.imports.vavae) against LightningDiT's own code.

``tests/fixtures/vavae_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
hustvl/LightningDiT at 2725fed: ``tokenizer/autoencoder.py``'s AutoencoderKL with its Encoder/Decoder rebuilt at
ch=32, ch_mult (1, 2), 1 res block, attention at resolution 8 (level 1) for 16x16 images, z = embed_dim = 4; its init
then every weight + N(0, 0.05); inputs 2 images uniform in [-1, 1]; outputs the posterior's mean and log-variance
(``encode``) and ``decode(mean)``; ``stats.*`` a made-up latents_stats.pt of shape (1, 4, 1, 1).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_dit_import import genlab

from genlab.config import component_from_dict, load_preset_dict
from genlab.imports.vavae import convert_vavae
from genlab.pipeline import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "vavae_tiny.safetensors"


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIXTURE))


def public(fx):
    return {k[4:]: v for k, v in fx.items() if k.startswith("vae.")}


def test_posterior_and_decoding_match_lightningdit(fx, tmp_path):
    cfg, _ = convert_vavae(public(fx))
    assert cfg["net"]["attn_levels"] == [1] and cfg["net"]["z_channels"] == 4 and cfg["embed_dim"] == 4
    torch.save({"state_dict": {**public(fx), "loss.logvar": torch.zeros(())}}, tmp_path / "vavae.pt")
    torch.save({"mean": fx["stats.mean"], "std": fx["stats.std"]}, tmp_path / "latents_stats.pt")
    r = genlab("import", "va-vae", tmp_path / "vavae.pt", "--stats", tmp_path / "latents_stats.pt",
               "--resolution", 16, "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    _, tok = load_tokenizer(tmp_path / "run")
    assert tok.cfg.sample_posterior and tok.token_spec.shape == (4, 8, 8)
    with torch.no_grad():
        post = tok.posterior(fx["in.image"])
        assert (post.mean - fx["out.mean"]).abs().max() <= 1e-5
        assert (post.logvar - fx["out.logvar"]).abs().max() <= 1e-5
        assert (tok.decode_latent(post.mean) - fx["out.decoded"]).abs().max() <= 1e-5
        mean, std = fx["stats.mean"].view(1, 4, 1, 1), fx["stats.std"].view(1, 4, 1, 1)
        decoded = tok.decode((fx["out.mean"] - mean) / std)  # LightningDiT's normalised latent back to pixels
    assert (decoded - fx["out.decoded"]).abs().max() <= 1e-5


def test_wrong_files_are_one_line_and_write_nothing(fx, tmp_path):
    torch.save(public(fx), tmp_path / "vavae.pt")
    r = genlab("import", "va-vae", tmp_path / "vavae.pt", "--out", tmp_path / "a")  # no latent statistics
    assert r.returncode == 2 and "--stats" in r.stderr and not (tmp_path / "a").exists()
    torch.save({"mean": torch.zeros(1, 3, 1, 1), "std": torch.ones(1, 3, 1, 1)}, tmp_path / "stats3.pt")
    r = genlab("import", "va-vae", tmp_path / "vavae.pt", "--stats", tmp_path / "stats3.pt", "--out", tmp_path / "b")
    assert r.returncode == 2 and "channels" in r.stderr and not (tmp_path / "b").exists()
    torch.save({"model": {"x_embedder.proj.weight": torch.zeros(2, 2)}}, tmp_path / "dit.pt")
    r = genlab("import", "va-vae", tmp_path / "dit.pt", "--raw", "--out", tmp_path / "c")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    sd = public(fx)
    sd["encoder.conv_out.weight"] = sd["encoder.conv_out.weight"][:, :-1]  # a truncated / altered tensor
    torch.save(sd, tmp_path / "cut.pt")
    r = genlab("import", "va-vae", tmp_path / "cut.pt", "--raw", "--resolution", 16, "--out", tmp_path / "d")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "d").exists()


def ldm_names(own: dict, net: dict) -> dict:
    """genlab's va-vae state dict in LDM's AutoencoderKL names (the inverse of the importer's mapping)."""
    levels, attn = len(net["ch_mult"]), {a % len(net["ch_mult"]) for a in net["attn_levels"]}
    mid = {"0": "block_1", "1": "attn_1", "2": "block_2"} if net["mid_attn"] else {"0": "block_1", "1": "block_2"}
    out = {}
    for k, v in own.items():
        if k.startswith("latent_"):
            continue
        parts = k.split(".")
        if parts[1] in ("down", "up") and parts[3] == "blocks":
            i = int(parts[2]) if parts[1] == "down" else levels - 1 - int(parts[2])
            n = int(parts[4])
            j, kind = (n // 2, "attn" if n % 2 else "block") if i in attn else (n, "block")
            k = ".".join([parts[0], parts[1], str(i), kind, str(j), *parts[5:]])
        elif parts[1] == "up":
            k = ".".join([parts[0], "up", str(levels - 1 - int(parts[2])), *parts[3:]])
        elif parts[1] == "mid":
            k = ".".join([parts[0], "mid", mid[parts[2]], *parts[3:]])
        out[k] = v
    return out


def test_paper_size_through_the_import_path():
    """VA-VAE f16d32 as LightningDiT's tokenizer/autoencoder.py builds it: 69,836,067 parameters (its
    AutoencoderKL(embed_dim=32, ch_mult=(1, 1, 2, 2, 4)) counted on the meta device; the paper gives no count)."""
    spec = load_preset_dict("imagenet256/vavae-f16d32")["tokenizer"]
    with torch.device("meta"):
        own = component_from_dict("tokenizer", spec, "tokenizer").build(resolution=256).state_dict()
    cfg, state = convert_vavae(ldm_names(own, spec["net"]))
    assert cfg["net"]["attn_levels"] == [4] and cfg["embed_dim"] == 32
    assert sum(v.numel() for v in state.values()) == 69_836_067
