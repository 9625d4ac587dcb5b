"""MaskGIT's VQGAN, PyTorch port (genlab.imports.maskgit_vqgan), against the port's own code.

``tests/fixtures/maskgit_vqgan_tiny.safetensors`` holds only tensors, made by a script run outside the repository on
bytedance/1d-tokenizer at 942a96f: ``modeling/modules/maskgit_vqgan.py``'s Encoder, Decoder and VectorQuantizer with
channel_mult (1, 2), hidden 32, 2 res blocks, z 16, 64 codes (N(0, 1)); every weight + N(0, 0.05); inputs 2 images
8x8 uniform in [0, 1] (the port's range); outputs the encoder's latent, the code ids and ``decoder(get_codebook_entry
(ids))`` (TiTok's PretrainedTokenizer.decode before its clamp).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_dit_import import genlab

from genlab.config import component_from_dict, load_preset_dict
from genlab.imports.maskgit_vqgan import convert_maskgit_vqgan
from genlab.pipeline import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "maskgit_vqgan_tiny.safetensors"


@pytest.fixture(scope="module")
def fx():
    return load_file(str(FIXTURE))


def public(fx):
    return {k[3:]: v for k, v in fx.items() if k.startswith("vq.")}


def test_tokens_exactly_and_decoding_match_the_port(fx, tmp_path):
    cfg, _ = convert_maskgit_vqgan(public(fx))
    assert cfg["net"]["shortcut"] == "output" and not cfg["net"]["conv_bias"] and cfg["unit_range"]
    torch.save(public(fx), tmp_path / "maskgit-vqgan.bin")
    r = genlab("import", "maskgit-vqgan", tmp_path / "maskgit-vqgan.bin", "--resolution", 8, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    _, tok = load_tokenizer(tmp_path / "run")
    images = fx["in.image"] * 2 - 1  # genlab's [-1, 1]
    with torch.no_grad():
        assert (tok.encoder(fx["in.image"]) - fx["out.latent"]).abs().max() <= 1e-5
        ids = tok.encode(images)
        assert torch.equal(ids, fx["out.ids"].long())
        decoded = tok.decode(ids)
    assert ((decoded + 1) / 2 - fx["out.decoded"]).abs().max() <= 1e-5  # the port's [0, 1] output
    save_file(public(fx), str(tmp_path / "model.safetensors"))  # the same weights as a safetensors file
    r = genlab("import", "maskgit-vqgan", tmp_path / "model.safetensors", "--resolution", 8, "--out", tmp_path / "r2")
    assert r.returncode == 0, r.stderr


def test_genlabs_own_shortcut_is_a_different_network(fx):
    cfg, state = convert_maskgit_vqgan(public(fx))
    cfg["net"]["shortcut"] = "input"
    tok = component_from_dict("tokenizer", cfg, "tokenizer").build(resolution=8)
    own = tok.state_dict()
    state = {k: v for k, v in state.items() if tuple(own[k].shape) == tuple(v.shape)}
    tok.load_state_dict(state, strict=False)
    with torch.no_grad():
        assert (tok.encoder(fx["in.image"]) - fx["out.latent"]).abs().max() > 1e-3  # the option matters


def test_wrong_files_are_one_line_and_write_nothing(fx, tmp_path):
    sd = public(fx)
    sd["encoder.down.0.block.0.conv1.bias"] = torch.zeros(32)  # a taming-style VQGAN
    torch.save(sd, tmp_path / "taming.bin")
    (tmp_path / "text.bin").write_text("hello")
    torch.save({k: v for k, v in public(fx).items() if "decoder.up.0" not in k}, tmp_path / "cut.bin")
    for name in ("taming.bin", "text.bin", "cut.bin"):
        r = genlab("import", "maskgit-vqgan", tmp_path / name, "--resolution", 8, "--out", tmp_path / name[:-4])
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
        assert not (tmp_path / name[:-4]).exists()


def port_names(own: dict, levels: int) -> dict:
    """genlab's vqgan state dict in the port's names (the inverse of the importer's mapping)."""
    out = {}
    for k, v in own.items():
        if k.startswith("quantizer."):
            if k == "quantizer.codebook":
                out["quantize.embedding.weight"] = v
            continue
        p = k.split(".")
        if p[:2] == ["encoder", "down"] and p[3] == "blocks":
            k = ".".join(["encoder.down", p[2], "block", *p[4:]])
        elif p[:2] == ["decoder", "up"]:
            i = str(levels - 1 - int(p[2]))
            k = (
                ".".join(["decoder.up", i, "block", *p[4:]])
                if p[3] == "blocks"
                else f"decoder.up.{i}.upsample_conv.{p[-1]}"
            )
        out[k] = v
    return out


def test_paper_size_through_the_import_path():
    """MaskGIT-VQGAN f16 with 1024 codes as the port builds it (TiTok's PretrainedTokenizer config): 54,515,587
    parameters, its Encoder + Decoder + VectorQuantizer counted on the meta device (the paper gives no count)."""
    spec = load_preset_dict("imagenet256/maskgit-vqgan")["tokenizer"]
    spec = {**spec, "net": {**spec["net"], "conv_bias": False, "shortcut": "output"}}
    with torch.device("meta"):
        own = component_from_dict("tokenizer", spec, "tokenizer").build(resolution=256).state_dict()
    cfg, state = convert_maskgit_vqgan(port_names(own, 5))
    assert cfg["quantizer"]["codebook_size"] == 1024 and cfg["embed_dim"] == 256
    assert sum(v.numel() for v in state.values()) == 54_515_587
