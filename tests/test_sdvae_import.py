"""SD-VAE folders: the scaling and shift factors come from the folder, an imported run is self-contained, and
``genlab info`` counts the VAE and generator that are really built."""

import json
import shutil

import torch
from test_dit_import import genlab, tiny_vae

from genlab.pipeline import load_tokenizer


def test_sd_vae_import_is_self_contained_and_reads_the_factors(tmp_path):
    from diffusers import AutoencoderKL

    vae = tiny_vae(tmp_path / "vae")  # scaling 0.13025, shift 0.1
    r = genlab("import", "sd-vae", vae, "--resolution", 16, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    ref = AutoencoderKL.from_pretrained(str(vae))
    shutil.rmtree(vae)  # the run does not need the folder any more
    _, tok = load_tokenizer(tmp_path / "run")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ref.encode(x).latent_dist.mean
        torch.testing.assert_close(tok.encode(x), (z - 0.1) * 0.13025)
        torch.testing.assert_close(tok.decode(tok.encode(x)), ref.decode(z).sample, atol=1e-5, rtol=1e-4)
    r = genlab("import", "sd-vae", tmp_path / "nothing", "--out", tmp_path / "run2")
    assert r.returncode == 2 and not (tmp_path / "run2").exists()


def test_info_counts_the_vae_and_channels_really_built(tmp_path):
    from diffusers import AutoencoderKL

    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=16,
                  norm_num_groups=4).save_pretrained(tmp_path / "vae16")  # fmt: skip
    n_vae = sum(p.numel() for p in AutoencoderKL.from_pretrained(str(tmp_path / "vae16")).parameters())
    r = genlab("info", "--preset", "imagenet256/dit-b-2", f"tokenizer.path={tmp_path / 'vae16'}", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["params"]["tokenizer"] == n_vae  # not SD-VAE's 83.7M
    # a 16-channel latent at 256 / 2 = 128: DiT-B/2's patch embedding takes 16 channels
    assert info["params"]["generator"] > 0
    from genlab import config
    from genlab.pipeline import Pipeline

    cfg = config.load("imagenet256/dit-b-2", [f"tokenizer.path={tmp_path / 'vae16'}"])
    with torch.device("meta"):
        pipe = Pipeline.from_config(cfg)
    assert pipe.generator.backbone.x_embedder.weight.shape[1] == 16
