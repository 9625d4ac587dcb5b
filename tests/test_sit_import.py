"""SiT and LightningDiT checkpoints (genlab.imports.sit) against their own code: the imported backbone's output at
genlab time 1 - t is minus the public model's velocity at t.

``tests/fixtures/sit_ldit_tiny.safetensors`` holds only tensors, made by a script run outside the repository:

- willisma/SiT at 947f95b: ``SiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
  num_classes=10, learn_sigma=True)``;
- hustvl/LightningDiT at 2725fed: ``LightningDiT(input_size=4, patch_size=1, in_channels=8, hidden_size=64, depth=2,
  num_heads=4, num_classes=10, use_qknorm=True, use_swiglu=True, use_rope=True, use_rmsnorm=True)``;

each with its init, then every trainable weight + N(0, 0.3); outputs ``forward(x, t, y)`` at SiT times t = (0.1, 0.5,
0.9) and y = (1, 7, 10 = null).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.config import component_from_dict
from genlab.imports.sit import convert_sit
from genlab.tokenizers.base import TokenSpec

FIXTURE = Path(__file__).parent / "fixtures" / "sit_ldit_tiny.safetensors"


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIXTURE))


@pytest.mark.parametrize("name", ["sit", "ldit"])
def test_imported_backbone_is_the_public_velocity_in_genlab_time(fx, name):
    sd = {k[len(name) + 1 :]: v for k, v in fx.items() if k.startswith(name + ".")}
    cfg, facts, state = convert_sit(sd, lightning=name == "ldit", num_heads=2 if name == "sit" else 0)
    C, S = facts["in_channels"], facts["input_size"]
    model = component_from_dict("generator", cfg, "generator").build(spec=TokenSpec("continuous", (C, S, S)),
                                                                     num_classes=facts["num_classes"])  # fmt: skip
    model.load_state_dict(state)
    x = fx["in.x"] if name == "sit" else fx["in.xl"]
    with torch.no_grad():
        ours = model.eval()(x, 1 - fx["in.t"].double(), fx["in.y"])  # float64 time: 1 - (1 - t) is t again
    theirs = fx[f"out.{name}"][:, :C]
    # outputs reach |90| (weights + N(0, 0.3)): float32 rounding of RoPE/RMSNorm is 5e-5 there (SiT: 0 exactly)
    assert (ours + theirs).abs().max() <= 1e-6 * theirs.abs().max()
    if name == "ldit":
        assert (cfg["mlp"], cfg["norm"], cfg["rope"], cfg["qk_norm"], cfg["num_heads"]) == ("swiglu", "rmsnorm", True,
                                                                                          True, 4)  # fmt: skip


def test_genlab_import_sit_makes_a_flow_run_with_sits_sampling_defaults(fx, tmp_path):
    from test_dit_import import genlab, tiny_vae

    from genlab.pipeline import Pipeline

    torch.save({k[4:]: v for k, v in fx.items() if k.startswith("sit.")}, tmp_path / "sit.pt")
    r = genlab("import", "sit", tmp_path / "sit.pt", "--vae", tiny_vae(tmp_path / "vae"), "--num-heads", 2,
               "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    pipe = Pipeline.load(tmp_path / "run")
    o = pipe.sample_options({})
    assert (pipe.cfg.objective.name, o.sampler, o.steps, o.cfg, o.guidance_channels) == ("flow", "euler", 250, 1.5, 3)
    with torch.no_grad():
        ours = pipe.generator.backbone(fx["in.x"], 1 - fx["in.t"].double(), fx["in.y"])
    assert torch.equal(ours, -fx["out.sit"][:, :4])
    r = genlab("import", "lightningdit", tmp_path / "sit.pt", "--vae", tmp_path / "vae", "--out", tmp_path / "bad")
    assert r.returncode == 2 and not (tmp_path / "bad").exists()  # a SiT is not a LightningDiT (no SwiGLU ...)


def test_paper_sizes_through_the_import_path():
    from genlab.generators.dit import LIGHTNINGDIT_SWITCHES, DiT, latent_spec
    from genlab.imports.dit import paper_state_dict

    cfg, _, state = convert_sit(paper_state_dict(28, 1152, 2))  # SiT-XL/2 has DiT-XL/2's shapes (675M, SiT paper)
    assert cfg["num_heads"] == 16 and sum(v.numel() for v in state.values()) == 674_816_272  # velocity head only
    with torch.device("meta"):
        own = DiT(DiT.Config(depth=28, hidden_size=1152, num_heads=16, patch_size=1, **LIGHTNINGDIT_SWITCHES),
                  spec=latent_spec(32, 16), num_classes=1000).state_dict()  # fmt: skip
        sd = {k.replace("x_embedder.", "x_embedder.proj."): v for k, v in own.items()}
        sd["pos_embed"], sd["feat_rope.freqs_cos"] = torch.empty(1, 256, 1152), torch.empty(256, 36)
    cfg, _, state = convert_sit(sd, lightning=True)
    assert (cfg["mlp"], cfg["norm"], cfg["rope"], cfg["qk_norm"], cfg["num_heads"]) == ("swiglu", "rmsnorm", True,
                                                                                      False, 16)  # fmt: skip
    # LightningDiT-XL/1: 675M (its README); this count excludes the fixed pos_embed (256 x 1152)
    assert sum(v.numel() for v in state.values()) == 674_961_824  # = lightningdit_param_count("XL/1")
