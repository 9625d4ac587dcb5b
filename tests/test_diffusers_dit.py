"""genlab export diffusers / genlab import diffusers-dit: the round trip is bitwise, DiTPipeline samples the
exported folder as genlab samples the run (same noise, DDIM), and a folder that is not a DiT is refused."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_dit_import import genlab

from genlab.generators.objectives.ddpm import diffusion_loop
from genlab.pipeline import Pipeline

FIXTURE = Path(__file__).parent / "fixtures" / "dit_tiny.safetensors"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dd")
    sd = {k[4:]: v for k, v in load_file(str(FIXTURE)).items() if k.startswith("dit.")}
    torch.save(sd, tmp / "dit.pt")
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  scaling_factor=0.5).save_pretrained(tmp / "vae")  # fmt: skip
    r = genlab("import", "dit", tmp / "dit.pt", "--vae", tmp / "vae", "--num-heads", 2, "--out", tmp / "a")
    assert r.returncode == 0, r.stderr
    r = genlab("export", "diffusers", "--run", tmp / "a", "--out", tmp / "hf")
    assert r.returncode == 0 and "downscale_freq_shift" in r.stdout, r.stderr
    r = genlab("import", "diffusers-dit", tmp / "hf", "--out", tmp / "b")
    assert r.returncode == 0, r.stderr
    return tmp


def test_round_trip_is_bitwise(runs):
    a, b = (load_file(str(runs / r / "generator" / "model.safetensors")) for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca, cb = (json.loads((runs / r / "generator" / "config.json").read_text()) for r in ("a", "b"))
    assert ca["generator"] == cb["generator"] and ca["objective"] == cb["objective"]
    pa, pb = Pipeline.load(runs / "a"), Pipeline.load(runs / "b")
    assert pa.class_names == pb.class_names
    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([0.1, 0.9], dtype=torch.float64)
    y = torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(pa.generator.backbone(x, t, y), pb.generator.backbone(x, t, y))


def test_ditpipeline_samples_the_export_as_genlab_does(runs):
    from diffusers import DiTPipeline

    folder = runs / "hf_plain"
    shutil.copytree(runs / "hf", folder)
    (folder / "genlab.json").unlink()  # a folder from elsewhere: the import computes diffusers' embedding
    r = genlab("import", "diffusers-dit", folder, "--out", runs / "c")
    assert r.returncode == 0, r.stderr
    pipe = Pipeline.load(runs / "c")
    assert pipe.generator.backbone.cfg.time_freq_shift == 1.0 and pipe.tokenizer.scaling_factor == 0.5
    hf = DiTPipeline.from_pretrained(str(folder))
    labels = [3, 8]
    images = hf(labels, num_inference_steps=10, guidance_scale=1.0, generator=torch.Generator().manual_seed(4),
                output_type="np").images  # fmt: skip
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(4))
    gen = pipe.generator
    opts = gen.SampleOptions(sampler="ddim", steps=10, spacing="leading", cfg=1.0)
    with torch.no_grad():
        x = diffusion_loop(gen, gen.network(torch.tensor(labels), opts), noise, gen.diffusion.respaced(10, "leading"),
                           "ddim", None)  # fmt: skip
        ours = (pipe.tokenizer.decode(x) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - images).max() < 1e-4


def test_a_folder_that_is_not_a_dit_is_refused(runs, tmp_path):
    folder = tmp_path / "notdit"
    (folder / "transformer").mkdir(parents=True)
    (folder / "transformer" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    shutil.copy(runs / "hf" / "transformer" / "diffusion_pytorch_model.safetensors", folder / "transformer")
    r = genlab("import", "diffusers-dit", folder, "--out", tmp_path / "run")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    r = genlab("export", "diffusers", "--run", tmp_path / "nothing", "--out", tmp_path / "x")
    assert r.returncode == 2 and not (tmp_path / "x").exists()
