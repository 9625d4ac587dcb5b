"""``genlab import omnitokenizer``: the public OmniTokenizer built at a tiny random config outside the repository
(FoundationVision/OmniTokenizer's Encoder, Decoder, pre/post-VQ linears and Codebook; every parameter random), its
tensors, inputs and outputs in tests/fixtures/omnitokenizer_tiny.safetensors; genlab's import must give its ids
and reconstructions for images and for 5-frame clips."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genlab.imports.checks import CheckpointError
from genlab.imports.omnitokenizer import import_omnitokenizer, omni_config
from genlab.runs.store import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "omnitokenizer_tiny.safetensors"


@pytest.fixture(scope="module")
def public():
    data = load_file(str(FIXTURE))
    state = {k[len("state.") :]: v for k, v in data.items() if k.startswith("state.")}
    return state, {k[len("io.") :]: v for k, v in data.items() if k.startswith("io.")}


def lightning_checkpoint(state: dict, path: Path) -> Path:
    """The file layout of a released .ckpt: the state dict beside hyper-parameters holding an argparse Namespace."""
    extra = {"image_discriminator.model.0.weight": torch.zeros(4, 3, 3, 3), "perceptual_model.net.w": torch.ones(2)}
    torch.save({"state_dict": {**state, **extra}, "hyper_parameters": {"args": argparse.Namespace(n_codes=64)},
                "global_step": 7}, path)  # fmt: skip
    return path


def test_the_config_is_read_from_the_tensors(public):
    cfg = omni_config(public[0])
    assert (cfg["patch"], cfg["temporal_patch"], cfg["width"], cfg["num_heads"], cfg["code_dim"]) == (4, 2, 32, 2, 4)
    assert (cfg["encoder_blocks"], cfg["decoder_blocks"], cfg["temporal_depth"], cfg["window"]) == ("tw", "tt", 2, 2)
    assert cfg["name"] == "omnitokenizer" and cfg["quantizer"]["codebook_size"] == 64


def test_imported_ids_and_reconstructions_equal_the_public_code(public, tmp_path):
    state, io = public
    run = import_omnitokenizer(lightning_checkpoint(state, tmp_path / "x.ckpt"), tmp_path / "run", resolution=16)
    _, tok = load_tokenizer(run)
    for name in ("image", "clip"):
        x = io[name]
        clips = x.unsqueeze(2) if x.ndim == 4 else x
        features = torch.nn.functional.normalize(tok.encode_features(clips), dim=1)
        torch.testing.assert_close(features, io[f"{name}_features"], rtol=1e-4, atol=1e-5)
        ids = tok.encode(x)
        want = io[f"{name}_ids"][:, 0] if x.ndim == 4 else io[f"{name}_ids"]
        assert torch.equal(ids, want), f"{name}: {(ids != want).sum()} of {ids.numel()} ids differ"
        torch.testing.assert_close(tok.decode(ids), io[f"{name}_recon"], rtol=1e-4, atol=1e-4)


def test_a_foreign_or_damaged_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="not an? OmniTokenizer checkpoint"):
        import_omnitokenizer(bad, tmp_path / "r")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a plain weights file"):
        import_omnitokenizer(tmp_path / "junk.ckpt", tmp_path / "r2")


def test_a_vae_checkpoint_imports_as_omnitokenizer_kl(public, tmp_path):
    state, io = public
    vae = {k: v for k, v in state.items() if not k.startswith("codebook.")}
    w, b = state["pre_vq_conv.1.weight"], state["pre_vq_conv.1.bias"]
    vae["pre_vq_conv.1.weight"], vae["pre_vq_conv.1.bias"] = torch.cat([w, -w]), torch.cat([b, b])  # mean, logvar
    torch.save(vae, tmp_path / "vae.pt")
    _, tok = load_tokenizer(import_omnitokenizer(tmp_path / "vae.pt", tmp_path / "run", resolution=16))
    assert tok.token_spec.kind == "continuous" and tok.cfg.normalize == "none"
    mean = tok.posterior(io["clip"]).mean  # the VQ model's features before their l2 normalisation
    torch.testing.assert_close(torch.nn.functional.normalize(mean, dim=1), io["clip_features"], rtol=1e-4, atol=1e-5)
    codes = state["codebook.embeddings"][io["clip_ids"]].permute(0, 4, 1, 2, 3)  # (B, C, t, h, w): the VQ's codes
    torch.testing.assert_close(tok.decode(codes), io["clip_recon"], rtol=1e-4, atol=1e-4)  # the same decoder
