"""``genlab import titok``: the public TiTok (bytedance/1d-tokenizer @ 942a96f, modeling/titok.py) built at a tiny
random configuration outside the repo (ViT width 32, 2 layers, 2 heads, 8x8 patches of 32x32 images, 8 latent
tokens, 64 l2-normalised codes of dimension 4, ``is_legacy: False``), every weight perturbed from its init; the
fixture holds its state dict (under ``model.``), its config (metadata), input images in [0, 1], its token ids and
its ``decode_tokens`` reconstructions."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genlab.cli import main
from genlab.pipeline import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "titok_tiny.safetensors"
# a two-stage TiTok (``is_legacy: True``, ``finetune_decoder: True``) at the same sizes; its MaskGIT-VQGAN pixel decoder
# and codebook (maskgit_vqgan.py's Decoder, Vector Quantizer) at a tiny config: channel_mult (1, 1, 1, 2), hidden 32,
# 2 res blocks, z 16, 1024 codes; every weight + N(0, 0.3); outputs ids, the legacy logits ``decoder(z)`` and
# ``decode_tokens(ids)``
LEGACY = Path(__file__).parent / "fixtures" / "titok_legacy_tiny.safetensors"


def write(fixture: Path, folder: Path) -> tuple[Path, dict]:
    """The fixture's weights as the hub has them (model.safetensors + config.json in ``folder``) and its tensors."""
    tensors = load_file(str(fixture))
    with safe_open(str(fixture), "pt") as f:
        conf = json.loads(f.metadata()["config"])
    folder.mkdir(exist_ok=True)
    save_file({k: v for k, v in tensors.items() if k.startswith("model.")}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(conf))
    return folder / "model.safetensors", tensors


@pytest.fixture
def checkpoint(tmp_path):
    return write(FIXTURE, tmp_path)


@pytest.fixture
def legacy_run(tmp_path):
    """The two-stage TiTok imported: (run folder, the fixture's tensors)."""
    path, tensors = write(LEGACY, tmp_path / "legacy")
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "legacy-run"), "--num-heads", "2"]) == 0
    return tmp_path / "legacy-run", tensors


def test_import_reproduces_token_ids_and_reconstructions(checkpoint, tmp_path):
    path, t = checkpoint
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "run"), "--num-heads", "2"]) == 0
    _, tok = load_tokenizer(tmp_path / "run")
    ids = tok.encode(t["input"] * 2 - 1)  # genlab's images are in [-1, 1]
    recon = tok.decode(ids)
    assert torch.equal(ids, t["ids"].long())
    assert (recon - (t["recon"] * 2 - 1)).abs().max() < 1e-5  # TiTok's [0, 1] output, as [-1, 1] (measured 2.4e-7)


def test_two_stage_import_reproduces_ids_logits_and_reconstructions(legacy_run):
    """The released two-stage TiTok decodes through MaskGIT-VQGAN's decoder: head legacy, its proxy the port's."""
    run, t = legacy_run
    _, tok = load_tokenizer(run)
    assert tok.cfg.head == "legacy" and tok.cfg.legacy_layout and tok.cfg.proxy["net"]["shortcut"] == "output"
    with torch.no_grad():
        ids = tok.encode(t["input"] * 2 - 1)
        logits = tok.decoder_output(tok.indices_to_codes(ids))
        recon = tok.decode(ids)
    assert torch.equal(ids, t["ids"].flatten(1).long())  # the two images' ids differ (at 2 of 8 places)
    assert (logits - t["logits"]).abs().max() <= 1e-5 * t["logits"].abs().max()  # measured 4.8e-6 of 7.3
    assert ((recon + 1) / 2 - t["recon"]).abs().max() <= 1e-5 * t["recon"].abs().max()  # measured 5.8e-5 of 14.2


def test_bad_imports_are_one_line(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "a")]) == 2  # tiny size: heads unknown
    assert "--num-heads" in capsys.readouterr().err
    conf = json.loads((path.parent / "config.json").read_text())
    conf["model"]["vq_model"]["is_legacy"] = True
    (tmp_path / "legacy.json").write_text(json.dumps(conf))
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "b"), "--config", str(tmp_path / "legacy.json"),
                 "--num-heads", "2"]) == 2  # fmt: skip
    assert "MaskGIT-VQGAN's pixel decoder" in capsys.readouterr().err  # a legacy config without one
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "config.json").write_text(json.dumps(conf))
    assert main(["import", "titok", str(tmp_path / "junk.safetensors"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_two_stage_paper_sizes_through_the_import_path():
    """The released stage-2 TiTok-L-32 / B-64 / S-128: the stage-1 parts (tests/test_titok.py: equal to the public
    model's) + MaskGIT-VQGAN's decoder and codebook as the import derives them from the port's names: 30,740,483, the
    port's Decoder + VectorQuantizer(1024, 256) (641,054,735 - 610,314,252 for L-32, on the meta device)."""
    from test_maskgit_vqgan_import import port_names

    from genlab.config import component_from_dict, load_preset_dict
    from genlab.imports.titok import proxy_config

    spec = load_preset_dict("imagenet256/maskgit-vqgan")["tokenizer"]
    spec = {**spec, "net": {**spec["net"], "conv_bias": False, "shortcut": "output"}}
    with torch.device("meta"):
        own = component_from_dict("tokenizer", spec, "tokenizer").build(resolution=256).state_dict()
    port = {k: v for k, v in port_names(own, 5).items() if k.startswith(("decoder.", "quantize."))}
    proxy = proxy_config({f"pixel_{k}": v for k, v in port.items()})  # TiTok's pixel_decoder.*, pixel_quantize.*
    assert proxy["net"]["ch_mult"] == [1, 1, 2, 2, 4] and proxy["quantizer"]["codebook_size"] == 1024
    with torch.device("meta"):
        built = component_from_dict("tokenizer", proxy, "tokenizer").build(resolution=256)
    decoding = sum(p.numel() for n, p in built.named_parameters() if n.startswith(("decoder.", "quantizer.")))
    assert decoding == sum(v.numel() for v in port.values()) == 641_054_735 - 610_314_252
