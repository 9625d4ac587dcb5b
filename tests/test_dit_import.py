"""DiT's objective and checkpoints (genlab.generators.objectives.ddpm, genlab.imports.dit) against DiT's own code.

``tests/fixtures/dit_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
facebookresearch/DiT at commit ed81ce2 (its code is not in genlab):

- ``DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10,
  learn_sigma=True)``, DiT's init then every trainable weight + N(0, 0.3) (so that adaLN-Zero is not zero);
- ``forward(x, t, y)`` at t = (0, 500, 999), y = (1, 7, 10 = null);
- ``create_diffusion("").training_losses`` at those x, t, y with fixed noise: per-sample loss, mse and vb;
- ``space_timesteps(1000, "250")``;
- ``create_diffusion("10").p_sample_loop`` and ``create_diffusion("ddim10").ddim_sample_loop`` (eta 0) of
  ``forward_with_cfg`` (cfg 4, DiT's 3-channel guidance) from fixed noise z for labels (2, 5), with the noise of
  every ancestral step recorded (``torch.randn_like`` replaced by draws that are saved).
"""

import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.config import component_from_dict
from genlab.generators.base import build_generator
from genlab.generators.objectives.ddpm import diffusion_loop
from genlab.generators.objectives.gaussian import space_timesteps
from genlab.imports.dit import convert_dit, paper_state_dict
from genlab.tokenizers.base import TokenSpec

FIXTURE = Path(__file__).parent / "fixtures" / "dit_tiny.safetensors"


@pytest.fixture(scope="module")
def fx():
    data = load_file(str(FIXTURE))
    return {
        "sd": {k[4:]: v for k, v in data.items() if k.startswith("dit.")},
        **{k: v for k, v in data.items() if not k.startswith("dit.")},
    }


@pytest.fixture(scope="module")
def model(fx):
    cfg, facts, state = convert_dit(fx["sd"], num_heads=2)
    assert facts == {"in_channels": 4, "input_size": 8, "learn_sigma": True, "num_classes": 10}
    gen = component_from_dict("generator", cfg, "generator")
    obj = component_from_dict("objective", {"name": "ddpm"}, "objective")
    m = build_generator(gen, obj, spec=TokenSpec("continuous", (4, 8, 8)), num_classes=10)
    m.backbone.load_state_dict(state)
    return m.eval()


def test_forward_and_hybrid_loss_match_dit(fx, model):
    with torch.no_grad():
        out = model.backbone(fx["in.x"], model._time(fx["in.t"]), fx["in.y"])
        torch.testing.assert_close(out, fx["out.forward"], atol=1e-5, rtol=1e-5)
        mse, vb = model.loss_terms(fx["in.x"], fx["in.y"], fx["in.t"], fx["in.noise"])
    torch.testing.assert_close(mse, fx["out.loss.mse"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vb, fx["out.loss.vb"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mse + vb, fx["out.loss.loss"], atol=1e-5, rtol=1e-4)
    assert space_timesteps(1000, 250) == fx["out.respace250"].tolist()


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_respaced_sampling_with_3_channel_guidance_matches_dit(fx, model, kind):
    opts = model.SampleOptions(sampler=kind, steps=10, cfg=4.0, guidance_channels=3,
                               spacing="iddpm" if kind == "ddpm" else "leading")  # fmt: skip
    g = model.network(fx["in.labels"], opts)
    d = model.diffusion.respaced(10, opts.spacing)
    noise = fx["out.ddpm10_noise"]  # in loop order: step k = 9 first

    with torch.no_grad():
        x = diffusion_loop(model, g, fx["in.z"], d, kind, lambda k: noise[9 - k])
    torch.testing.assert_close(x, fx[f"out.{kind}10"], atol=1e-5, rtol=1e-5)


def test_every_continuous_sampler_drives_an_eps_model_to_the_data():
    """A backbone that predicts the exact eps of a one-point data set: every sampler lands on the point."""
    from genlab.generators.objectives.ddpm import DDPM

    point = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    d = DDPM(DDPM.Config(learn_sigma=False), _Exact(point))
    for sampler in ("euler", "heun", "dpm++", "unipc", "ddpm", "ddim"):
        opts = d.SampleOptions(sampler=sampler, steps=8 if sampler != "ddpm" else 50)
        x = d.sample(torch.tensor([0, 1]), torch.tensor([3, 4]), opts).tokens
        torch.testing.assert_close(x, point.expand(2, -1, -1, -1), atol=2e-4, rtol=0, msg=sampler)


class _Exact(torch.nn.Module):
    def __init__(self, point):
        super().__init__()
        self.point, self.num_classes = point, 2
        self.spec = TokenSpec("continuous", tuple(point.shape[1:]))
        from genlab.generators.objectives.gaussian import Diffusion, linear_betas

        self.d = Diffusion(linear_betas(1000))

    def forward(self, x, t, y):  # eps = (x_n - a x0) / b at the (fractional) step 1000 t
        abar = self.d.abar_at(t.double() * 1000).float().view(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.point) / (1 - abar).sqrt()


def test_paper_size_dit_xl2_through_the_import_path():
    sd = paper_state_dict(28, 1152, 2)
    cfg, facts, state = convert_dit(sd)
    assert cfg["num_heads"] == 16 and facts["learn_sigma"]
    # DiT-XL/2: 675M (paper Table 4); DiT's count, 675,129,632, includes its fixed pos_embed (256 x 1152)
    assert sum(v.numel() for v in state.values()) + sd["pos_embed"].numel() == 675_129_632


def tiny_vae(folder: Path) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  scaling_factor=0.13025, shift_factor=0.1).save_pretrained(folder)  # fmt: skip
    return folder


def genlab(*args):
    """The CLI in this process: (status, stdout, stderr)."""
    import contextlib
    import io

    from genlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_genlab_import_dit_makes_a_run_that_samples_like_dit(fx, tmp_path):
    from safetensors.torch import load_file as lf

    from genlab.pipeline import Pipeline

    torch.save(fx["sd"], tmp_path / "dit.pt")
    vae = tiny_vae(tmp_path / "vae")
    r = genlab("import", "dit", str(tmp_path / "dit.pt"), "--vae", str(vae), "--num-heads", "2", "--out",
               str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    pipe = Pipeline.load(tmp_path / "run")
    assert pipe.tokenizer.scaling_factor == 0.13025 and pipe.tokenizer.shift_factor == pytest.approx(0.1)
    assert len(pipe.class_names) == 10 and pipe.tokenizer.token_spec.shape == (4, 8, 8)
    opts = pipe.sample_options({})
    assert (opts.sampler, opts.steps, opts.cfg, opts.guidance_channels) == ("ddpm", 250, 1.5, 3)
    with torch.no_grad():
        out = pipe.generator.backbone(fx["in.x"], pipe.generator._time(fx["in.t"]), fx["in.y"])
    torch.testing.assert_close(out, fx["out.forward"], atol=1e-5, rtol=1e-5)
    assert set(lf(str(tmp_path / "run" / "tokenizer" / "model.safetensors"))) == {
        f"vae.{k}" for k in lf(str(vae / "diffusion_pytorch_model.safetensors"))
    }  # the VAE's weights are inside the run
    r = genlab("info", "--run", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("bad", ["var", "truncated", "pickle", "text"])
def test_a_wrong_file_is_one_line_and_nothing_is_written(fx, tmp_path, bad):
    path = tmp_path / "bad.pt"
    if bad == "var":  # another model's checkpoint
        torch.save({"class_emb.weight": torch.zeros(3, 4), "pos_1LC": torch.zeros(1, 5, 4)}, path)
    elif bad == "truncated":
        torch.save(fx["sd"], tmp_path / "full.pt")
        path.write_bytes((tmp_path / "full.pt").read_bytes()[:5000])
    elif bad == "pickle":

        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))

        path.write_bytes(pickle.dumps(Evil()))
    else:
        path.write_text("hello")
    r = genlab("import", "dit", str(path), "--vae", str(tiny_vae(tmp_path / "vae")), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "pwned" not in r.stdout and not (tmp_path / "run").exists()
