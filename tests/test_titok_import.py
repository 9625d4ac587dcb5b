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


@pytest.fixture
def checkpoint(tmp_path):
    tensors = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), "pt") as f:
        conf = json.loads(f.metadata()["config"])
    save_file({k: v for k, v in tensors.items() if k.startswith("model.")}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(conf))
    return tmp_path / "model.safetensors", tensors


def test_import_reproduces_token_ids_and_reconstructions(checkpoint, tmp_path):
    path, t = checkpoint
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "run"), "--num-heads", "2"]) == 0
    _, tok = load_tokenizer(tmp_path / "run")
    ids = tok.encode(t["input"] * 2 - 1)  # genlab's images are in [-1, 1]
    recon = tok.decode(ids)
    assert torch.equal(ids, t["ids"].long())
    assert (recon - (t["recon"] * 2 - 1)).abs().max() < 1e-5  # TiTok's [0, 1] output, as [-1, 1] (measured 2.4e-7)


def test_bad_imports_are_one_line(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "a")]) == 2  # tiny size: heads unknown
    assert "--num-heads" in capsys.readouterr().err
    conf = json.loads((path.parent / "config.json").read_text())
    conf["model"]["vq_model"]["is_legacy"] = True
    (tmp_path / "legacy.json").write_text(json.dumps(conf))
    assert main(["import", "titok", str(path), "--out", str(tmp_path / "b"), "--config", str(tmp_path / "legacy.json"),
                 "--num-heads", "2"]) == 2  # fmt: skip
    assert "MaskGIT-VQGAN" in capsys.readouterr().err
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "config.json").write_text(json.dumps(conf))
    assert main(["import", "titok", str(tmp_path / "junk.safetensors"), "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())
