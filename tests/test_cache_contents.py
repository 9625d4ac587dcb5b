"""Issue 27: a token cache's shard contents are checked against its manifest and the run's token spec before
training reads them. Each crafted shard keeps a manifest whose sha256 matches it (what an attacker would do), and
``genlab train`` on it exits 2 with one line naming the shard, with nothing written to ``--out``."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from genlab.cli import main

NET = {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [], "mid_attn": False, "z_channels": 8,
       "norm_groups": 8}  # fmt: skip
VQ = {"name": "vqgan", "net": NET, "embed_dim": 4, "quantizer": {"name": "vq", "codebook_size": 32}}
MSVQ = {"name": "msvq-vae", "net": NET, "embed_dim": 4,
        "quantizer": {"name": "msvq", "scales": [1, 2, 4, 8], "vq": {"codebook_size": 32}}}  # fmt: skip
SHARD = "shard_00000.safetensors"


def make_cache(root, spec, name):
    """A tokenizer run of ``spec`` (random weights) and a cache of 16x16 digits written by `genlab cache`."""
    from genlab.config import component_from_dict
    from genlab.runs.store import RunFolder

    torch.manual_seed(0)
    comp = component_from_dict("tokenizer", dict(spec), "tokenizer")
    from genlab import config

    RunFolder(root / f"{name}-tok").write_component("tokenizer", config.to_dict(comp), comp.build(resolution=16))
    argv = ["cache", "--tokenizer", str(root / f"{name}-tok"), "--dataset", "digits", "--resolution", "16",
            "--out", str(root / f"{name}-cache"), "--shard-size", "1000"]  # fmt: skip
    assert main(argv) == 0
    return root / f"{name}-tok", root / f"{name}-cache"


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    return {"vq": make_cache(root, VQ, "vq"), "msvq": make_cache(root, MSVQ, "msvq")}


def craft(cache, dst, edit):
    """A copy of ``cache`` whose first shard's tensors went through ``edit(dict)``, its sha256 updated to match."""
    import shutil

    shutil.copytree(cache, dst)
    tensors = load_file(str(dst / SHARD))
    edit(tensors)
    save_file(tensors, str(dst / SHARD))
    m = json.loads((dst / "manifest.json").read_text())
    m["shards"][0]["sha256"] = hashlib.sha256((dst / SHARD).read_bytes()).hexdigest()
    m["checksum"] = hashlib.sha256("".join(e["sha256"] for e in m["shards"]).encode()).hexdigest()
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def train_on(tok, cache, out, preset, capsys):
    over = ["data.name=token-cache", f"data.path={cache}", "tokenizer.name=run", f"tokenizer.path={tok}",
            "train.steps=1", "train.checkpoint_every=0", "sample.per_class=1"]  # fmt: skip
    code = main(["train", "--preset", preset, "--out", str(out), *over])
    return code, capsys.readouterr().err.strip()


def ids(fn):
    def edit(t):
        t["tokens"] = fn(t["tokens"])

    return edit


def labels(value):
    def edit(t):
        t["label"][3] = value

    return edit


CASES = {
    "id = vocab size": ids(lambda x: x.index_fill(0, torch.tensor([5]), 32)),
    "id = -1": ids(lambda x: x.index_fill(0, torch.tensor([5]), -1)),
    "id = 2**31-1": ids(lambda x: x.index_fill(0, torch.tensor([5]), 2**31 - 1)),
    "float ids": ids(lambda x: x.float()),
    "uint8 ids": ids(lambda x: x.to(torch.uint8)),
    "flattened (N, 64)": ids(lambda x: x.reshape(len(x), -1).contiguous()),
    "4x4 maps under an 8x8 manifest": ids(lambda x: x[:, :4, :4].contiguous()),
    "label -1": labels(-1),
    "label 10 of 10 classes (the null class)": labels(10),
    "an extra tensor": lambda t: t.update(extra=torch.zeros(len(t["label"]), 2)),
}
EXPECT = {"float ids": "is F32", "uint8 ids": "is U8", "flattened (N, 64)": "rows of shape [64]",
          "4x4 maps under an 8x8 manifest": "rows of shape [4, 4]", "label -1": "'label' holds ids -1",
          "label 10 of 10 classes (the null class)": "outside 0..9", "an extra tensor": "are not tokens"}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_shard_is_one_data_error_naming_it(caches, tmp_path, capsys, case):
    tok, cache = caches["vq"]
    bad = craft(cache, tmp_path / "bad", CASES[case])
    code, err = train_on(tok, bad, tmp_path / "out", "smoke-maskgit", capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert str(bad / SHARD) in err and EXPECT.get(case, "outside 0..31") in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["a missing scale", "an id beyond the codebook in one scale"])
def test_a_crafted_multiscale_shard_is_one_data_error(caches, tmp_path, capsys, case):
    tok, cache = caches["msvq"]
    if case != "a missing scale":
        bad = craft(cache, tmp_path / "bad", lambda t: t["tokens.3"].index_fill_(0, torch.tensor([2]), 32))
        want = "'tokens.3' holds ids"
    else:
        bad = craft(cache, tmp_path / "bad", lambda t: t.pop("tokens.2"))
        want = "no tensor 'tokens.2'"
    code, err = train_on(tok, bad, tmp_path / "out", "smoke-var", capsys)
    assert code == 2 and len(err.splitlines()) == 1 and want in err and str(bad / SHARD) in err, err
    assert not (tmp_path / "out").exists()


def test_the_untouched_caches_still_train(caches, tmp_path, capsys):
    tok, cache = caches["vq"]
    code, err = train_on(tok, cache, tmp_path / "out", "smoke-maskgit", capsys)
    assert code == 0, err
