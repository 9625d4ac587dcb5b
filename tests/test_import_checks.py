"""Issue 27: ``genlab import`` of files that are not what they claim. Each importer checks keys, ranks, shapes and
the fit between generator and tokenizer (``genlab.imports.checks``) before writing anything: one line, nothing in
``--out``. Uses the tiny VAR fixture of tests/test_var_import.py."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny import generator_run

from genlab.cli import main
from genlab.imports.var import CheckpointError, import_var

FIXTURE = Path(__file__).parent / "fixtures" / "var_tiny.safetensors"
SCALES = (1, 2, 3)


@pytest.fixture(scope="module")
def fx():
    data = load_file(str(FIXTURE))
    return {p: {k[len(p) + 1 :]: v for k, v in data.items() if k.startswith(p + ".")} for p in ("vae", "var")}


@pytest.fixture(scope="module")
def vae_run(fx, tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    torch.save(fx["vae"], root / "vae.pth")
    return import_var("var-vqvae", root / "vae.pth", root / "vae-run", scales=SCALES, norm_groups=4)


def refused(kind, sd, tmp_path, want, *, vae=None, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(sd, path)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError) as e:
        kw = {"vae": vae} if kind == "var" else {"norm_groups": 4}
        import_var(kind, path, out, scales=SCALES, **kw)
    msg = str(e.value)
    assert "\n" not in msg and want in msg, msg
    assert not out.exists() or not any(out.iterdir()), "something was written to --out"
    return msg


def without(sd, prefix):
    return {k: v for k, v in sd.items() if not k.startswith(prefix)}


VQVAE_CASES = {
    "partial (no decoder.up.0)": (lambda sd: without(sd, "decoder.up.0"), "missing"),
    "partial (no decoder at all)": (lambda sd: without(sd, "decoder."), "decoder"),
    "zero-channel conv_in": (lambda sd: {**sd, "encoder.conv_in.weight": torch.zeros(0, 3, 3, 3)}, "is empty"),
    "1-D codebook": (lambda sd: {**sd, "quantize.embedding.weight": torch.zeros(16)}, "1 dimensions"),
    "NaN in a weight": (
        lambda sd: {**sd, "encoder.conv_in.bias": torch.full_like(sd["encoder.conv_in.bias"], float("nan"))},
        "'encoder.conv_in.bias' holds NaN",
    ),
}


@pytest.mark.parametrize("case", list(VQVAE_CASES))
def test_a_malformed_vqvae_is_one_line_and_writes_nothing(fx, tmp_path, case):
    edit, want = VQVAE_CASES[case]
    refused("var-vqvae", edit(dict(fx["vae"])), tmp_path, want)


VAR_CASES = {
    "1-D class_emb": (lambda sd: {**sd, "class_emb.weight": sd["class_emb.weight"].flatten()}, "'class_emb.weight'"),
    "1-D scale_mul": (
        lambda sd: {**sd, "blocks.0.attn.scale_mul_1H11": sd["blocks.0.attn.scale_mul_1H11"].flatten()},
        "'blocks.0.attn.scale_mul_1H11' has 1 dimensions",
    ),
    "1-D pos_1LC": (lambda sd: {**sd, "pos_1LC": sd["pos_1LC"].flatten()}, "'pos_1LC' has 1 dimensions"),
    "no blocks": (lambda sd: without(sd, "blocks."), "blocks"),
    "inf in a weight": (lambda sd: {**sd, "pos_start": sd["pos_start"] * float("inf")}, "'pos_start' holds NaN"),
}


@pytest.mark.parametrize("case", list(VAR_CASES))
def test_a_malformed_var_is_one_line_and_writes_nothing(fx, vae_run, tmp_path, case):
    edit, want = VAR_CASES[case]
    refused("var", edit(dict(fx["var"])), tmp_path, want, vae=vae_run)


def test_a_vae_that_is_a_maskgit_run_is_refused(fx, tmp_path):
    from genlab.config import RunConfig
    from genlab.pipeline import Pipeline

    Pipeline.from_config(RunConfig.from_dict(generator_run("maskgit")), [str(i) for i in range(10)]).save(
        tmp_path / "maskgit"
    )
    refused("var", dict(fx["var"]), tmp_path, "not VAR's multi-scale VQVAE", vae=tmp_path / "maskgit")


def test_a_var_whose_vocabulary_differs_from_its_tokenizer_is_refused(fx, tmp_path):
    vae = dict(fx["vae"])  # the fixture's VQVAE has 16 codes; give it 32
    vae["quantize.embedding.weight"] = torch.cat([vae["quantize.embedding.weight"]] * 2)
    torch.save(vae, tmp_path / "vae32.pth")
    run32 = import_var("var-vqvae", tmp_path / "vae32.pth", tmp_path / "vae32", scales=SCALES, norm_groups=4)
    msg = refused("var", dict(fx["var"]), tmp_path, "does not fit its tokenizer", vae=run32)
    assert "vocab_size 16 vs 32" in msg


@pytest.mark.parametrize("damage", ["not utf-8", "a list", "weights of another shape"])
def test_a_vae_run_with_bad_files_names_the_file(fx, vae_run, tmp_path, damage):
    import shutil

    bad = tmp_path / "vae-run"
    shutil.copytree(vae_run, bad)
    if damage == "not utf-8":
        (bad / "tokenizer" / "config.json").write_bytes(b"\xff\xfe{")
    elif damage == "a list":
        (bad / "tokenizer" / "config.json").write_text("[1, 2, 3]")
    else:
        w = load_file(str(bad / "tokenizer" / "model.safetensors"))
        w["quantizer.vq.codebook"] = torch.zeros(16, 3)
        save_file(w, str(bad / "tokenizer" / "model.safetensors"))
    name = "model.safetensors" if damage.startswith("weights") else "config.json"
    msg = refused("var", dict(fx["var"]), tmp_path, str(bad / "tokenizer"), vae=bad)
    assert name in msg, msg


def test_genlab_import_of_a_partial_vqvae_is_one_line(fx, tmp_path, capsys):
    torch.save(without(fx["vae"], "encoder.down"), tmp_path / "partial.pth")
    out = tmp_path / "out"
    assert main(["import", "var-vqvae", str(tmp_path / "partial.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab import: error:") and len(err.splitlines()) == 1 and "partial.pth" in err, err
    assert not out.exists()
