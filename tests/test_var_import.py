"""Importing VAR's released checkpoints (genlab.imports.var) checked against VAR's own code.

``tests/fixtures/var_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
FoundationVision/VAR at commit 78b9539 (its code is not in genlab):

- VQVAE(vocab_size=16, z_channels=8, ch=8, share_quant_resi=4, v_patch_nums=(1, 2, 3)) with its encoder and decoder
  rebuilt as Encoder/Decoder(ch=8, ch_mult=(1, 2), num_res_blocks=1, using_sa=True, using_mid_sa=True) and VAR's
  ``Normalize`` patched to 4 GroupNorm groups (the widths are 8 and 16); codebook N(0, 1), every weight + N(0, 0.05);
- two VAR(num_classes=4, depth=2, embed_dim=16, num_heads=2, patch_nums=(1, 2, 3), cond_drop_rate=0,
  drop_path_rate=0), with attn_l2_norm True ("var") and False ("var_nol2"), VAR's init_weights then every weight
  + N(0, 0.3) so that none is negligible; flash/fused ops off (plain PyTorch);
- inputs: 2 images (6x6, uniform in [-1, 1], torch.manual_seed(3)) and labels (1, 3);
- outputs: ``img_to_idxBl`` (the token maps), the decoder's output from ``embed_to_fhat`` of those maps (before the
  clamp), ``idxBl_to_var_input`` (teacher-forcing inputs), each VAR's teacher-forced logits ``forward(labels, x)``,
  and ``autoregressive_infer_cfg(B=2, label_B=labels, g_seed=0, cfg=1.5, top_k=1, top_p=0)`` (greedy, so
  deterministic: it exercises the KV cache, the CFG ramp and the next-scale inputs) as images in [0, 1].
"""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.config import component_from_dict
from genlab.imports.var import CheckpointError, convert_var, convert_vqvae, import_var, load_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "var_tiny.safetensors"
SCALES = (1, 2, 3)


@pytest.fixture(scope="module")
def fx():
    data = load_file(str(FIXTURE))

    def part(prefix):
        return {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}

    return {"vae": part("vae."), "var": part("var."), "var_nol2": part("var_nol2."), "in": part("in."), "out": data}


@pytest.fixture(scope="module")
def tokenizer(fx):
    cfg, state = convert_vqvae(fx["vae"], scales=SCALES, norm_groups=4)
    tok = component_from_dict("tokenizer", cfg, "tokenizer").build(resolution=6)
    tok.load_state_dict(state)
    return tok.eval()


def test_vqvae_tokens_and_decoding_match_var(fx, tokenizer):
    out = fx["out"]
    maps = tokenizer.encode(fx["in"]["image"])
    for k in range(len(SCALES)):
        assert torch.equal(maps[k], out[f"out.idx.{k}"]), k
    with torch.no_grad():
        decoded = tokenizer.decode_codes(tokenizer.indices_to_codes(maps))
        inputs = torch.cat([m.flatten(2).transpose(1, 2) for m in tokenizer.teacher_forcing_inputs(maps)], 1)
    torch.testing.assert_close(decoded, out["out.decoded"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inputs, out["out.teacher_inputs"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["var", "var_nol2"])
def test_var_logits_and_greedy_samples_match_var(fx, tokenizer, name):
    cfg, state, num_classes = convert_var(fx[name], scales=SCALES)
    assert (cfg["depth"], cfg["hidden_size"], cfg["num_heads"], cfg["attn_l2_norm"]) == (2, 16, 2, name == "var")
    model = component_from_dict("generator", cfg, "generator").build(
        spec=tokenizer.token_spec, num_classes=num_classes, codes=tokenizer.codes()
    )
    model.load_state_dict(state)
    model.eval()
    labels, out = fx["in"]["labels"], fx["out"]
    with torch.no_grad():
        logits = model(labels, out["out.teacher_inputs"])
    torch.testing.assert_close(logits, out[f"out.{name}.logits"], atol=1e-5, rtol=1e-5)
    opts = model.SampleOptions(cfg=2.5, top_k=1, top_p=0.0)  # VAR's cfg 1.5
    maps = model.sample(labels, torch.tensor([0, 1]), opts).tokens
    image = (tokenizer.decode(maps).clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(image, out[f"out.{name}.greedy_image"], atol=1e-5, rtol=1e-5)


def test_import_writes_a_self_contained_run(fx, tmp_path):
    import json

    import yaml

    torch.save(fx["vae"], tmp_path / "vae.pth")
    torch.save(fx["var"], tmp_path / "var.pth")
    tok_run = import_var("var-vqvae", tmp_path / "vae.pth", tmp_path / "vae-run", scales=SCALES, norm_groups=4)
    run = import_var("var", tmp_path / "var.pth", tmp_path / "var-run", vae=tok_run, scales=SCALES)
    for f in ("config.yaml", "class_names.json", "tokenizer/config.json", "tokenizer/model.safetensors",
              "generator/config.json", "generator/model.safetensors"):  # fmt: skip
        assert (run / f).is_file(), f
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["tokenizer"] == {"name": "run", "path": str(run)} and config["generator"]["name"] == "var"
    assert config["sample"]["top_k"] == 900 and len(json.loads((run / "class_names.json").read_text())) == 4
    tok_cfg = json.loads((run / "tokenizer" / "config.json").read_text())
    tok = component_from_dict("tokenizer", tok_cfg, "tokenizer").build(resolution=6)
    tok.load_state_dict(load_file(str(run / "tokenizer" / "model.safetensors")))
    saved = json.loads((run / "generator" / "config.json").read_text())
    gen = component_from_dict("generator", saved["generator"], "generator")
    assert saved["num_classes"] == 4 and saved["token_spec"]["scales"] == list(tok.token_spec.scales)
    model = gen.build(spec=tok.token_spec, num_classes=4, codes=tok.codes())
    model.load_state_dict(load_file(str(run / "generator" / "model.safetensors")))
    assert config["data"]["resolution"] == 6  # the tiny tokenizer's f2 x its last scale, 3
    with pytest.raises(FileExistsError):
        import_var("var", tmp_path / "var.pth", run, vae=tok_run, scales=SCALES)


class NotATensor:
    pass


def test_wrong_files_are_refused_in_one_line(fx, tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with open(tmp_path / "code.pth", "wb") as f:
        pickle.dump({"x": NotATensor()}, f)
    torch.save({"model": 1}, tmp_path / "nodict.pth")
    for name in ("text.pth", "code.pth", "nodict.pth", "missing.pth"):
        with pytest.raises(CheckpointError) as e:
            load_state_dict(tmp_path / name)
        assert "\n" not in str(e.value), name
    with pytest.raises(CheckpointError, match="not a VAR checkpoint"):
        convert_var(fx["vae"], scales=SCALES)
    with pytest.raises(CheckpointError, match="not a VAR VQVAE"):
        convert_vqvae(fx["var"], scales=SCALES)
    with pytest.raises(CheckpointError, match="positions"):
        convert_var(fx["var"], scales=(1, 2, 4))
    assert issubclass(CheckpointError, ValueError)


def test_genlab_import_command(fx, tmp_path, capsys):
    from genlab.cli import main

    torch.save(fx["vae"], tmp_path / "vae.pth")
    assert main(["import", "var-vqvae", str(tmp_path / "vae.pth"), "--out", str(tmp_path / "vae-run")]) == 2
    err = capsys.readouterr().err  # VAR's scales (1..16) do not fit this tiny VQVAE: one line, status 2
    assert err.startswith("genlab import: error:") and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert main(["import", "var", str(tmp_path / "junk.pth"), "--vae", str(tmp_path / "vae.pth"), "--out",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert main(["import", "var", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "y")]) == 2


def test_genlab_import_takes_the_converters_scales_heads_and_groups(fx, tmp_path, capsys):
    """A checkpoint not at VAR's 256 px defaults (here patch_nums 1,2,3 and 4 GroupNorm groups) imports through the
    command's --scales / --norm-groups / --num-heads, the options the converter takes."""
    from genlab.cli import main

    torch.save(fx["vae"], tmp_path / "vae.pth")
    torch.save(fx["var"], tmp_path / "var.pth")
    flags = ["--scales", "1,2,3", "--norm-groups", "4"]
    assert main(["import", "var-vqvae", str(tmp_path / "vae.pth"), "--out", str(tmp_path / "t"), *flags]) == 0
    assert main(["import", "var", str(tmp_path / "var.pth"), "--vae", str(tmp_path / "t"), "--out",
                 str(tmp_path / "g"), *flags, "--num-heads", "2"]) == 0  # fmt: skip
    saved = json.loads((tmp_path / "g" / "generator" / "config.json").read_text())
    assert saved["token_spec"]["scales"] == [1, 2, 3] and saved["generator"]["num_heads"] == 2
    with pytest.raises(SystemExit) as e:  # argparse's usage error: status 2
        main(["import", "var", str(tmp_path / "var.pth"), "--out", str(tmp_path / "x"), "--scales", "3,2"])
    assert e.value.code == 2 and "increasing" in capsys.readouterr().err and not (tmp_path / "x").exists()
