"""Streamable shards (``genlab data pack``): the folder's pixels exactly, corrupt shards named, resumable packing,
and training on them resumes bitwise after kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import toytrain
from PIL import Image

from genlab.data import shards
from genlab.data.base import DataError
from genlab.data.imagefolder import ImageFolderDataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def _tree(base: Path, n: int = 5) -> Path:
    """3 classes x n images of odd sizes, PNG and JPEG."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cat")):
        (base / "train" / name).mkdir(parents=True)
        for k in range(n):
            arr = rng.integers(0, 256, (20 + 3 * k, 17 + 5 * c, 3), dtype=np.uint8)
            Image.fromarray(arr).save(base / "train" / name / f"{k}.{'png' if k % 2 else 'jpg'}")
    return base


def _folder(root: Path, res: int = 16) -> ImageFolderDataset:
    return ImageFolderDataset(ImageFolderDataset.Config(root=str(root), resolution=res, num_classes=3))


def _shards(root: Path, res: int = 16, hflip: bool = True) -> shards.ShardDataset:
    return shards.ShardDataset(shards.ShardDataset.Config(root=str(root), resolution=res, hflip=hflip))


@pytest.mark.parametrize("stored", [16, 0])
def test_shards_hold_the_folders_pixels_exactly(tmp_path, stored):
    src = _tree(tmp_path / "data")
    manifest = shards.pack(_folder(src, max(stored, 8)), tmp_path / "s", resolution=stored, per_shard=4, progress=False)
    assert len(manifest["shards"]) == 4 and manifest["num_samples"] == 15
    folder, ds = _folder(src), _shards(tmp_path / "s")
    assert ds.class_names == folder.class_names and len(ds) == len(folder)
    for i in range(len(ds)):
        for flip in (False, True):
            a, b = folder[(i, flip)], ds[(i, flip)]
            assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tar:  # the WebDataset layout: KEY.ext members
        names = tar.getnames()
    assert names[:2] == ["000000000.jpg" if stored == 0 else "000000000.png", "000000000.cls"]


def test_a_corrupt_or_truncated_shard_is_one_error_naming_it(tmp_path):
    src = _tree(tmp_path / "data")
    shards.pack(_folder(src), tmp_path / "s", resolution=16, per_shard=4, progress=False)
    shard = tmp_path / "s" / "shard-000001.tar"
    ds = _shards(tmp_path / "s")
    offset = int(ds.index["offset"][5])
    data = bytearray(shard.read_bytes())
    data[offset + 40] ^= 0xFF
    shard.write_bytes(bytes(data))
    ds = _shards(tmp_path / "s")
    ds[0]  # another shard reads fine
    with pytest.raises(DataError, match="shard-000001.tar is corrupt: sample 5"):
        ds[5]
    r = subprocess.run([sys.executable, "-m", "genlab", "data", "verify", str(tmp_path / "s")], env=ENV,
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "shard-000001.tar does not match its sha256" in r.stderr
    assert "Traceback" not in r.stderr
    shard.write_bytes(bytes(data[:1000]))
    with pytest.raises(DataError, match="shard-000001.tar has 1000 bytes"):
        _shards(tmp_path / "s")[5]
    (tmp_path / "s" / "index.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match="cannot read the shard index"):
        _shards(tmp_path / "s")


def test_an_interrupted_pack_continues_with_the_shards_it_finished(tmp_path, monkeypatch):
    src = _tree(tmp_path / "data")
    whole = shards.pack(_folder(src), tmp_path / "whole", resolution=16, per_shard=4, progress=False)
    write, calls = shards._write_shard, []

    def dies_on_the_third(folder, out, s, items, res):
        calls.append(s)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write(folder, out, s, items, res)

    monkeypatch.setattr(shards, "_write_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        shards.pack(_folder(src), tmp_path / "s", resolution=16, per_shard=4, progress=False)
    assert not (tmp_path / "s" / "manifest.json").exists()
    monkeypatch.setattr(shards, "_write_shard", lambda *a: calls.append(a[2]) or write(*a))
    again = shards.pack(_folder(src), tmp_path / "s", resolution=16, per_shard=4, progress=False)
    assert calls == [0, 1, 2, 2, 3]  # shards 0 and 1 were kept
    assert again == whole
    assert (tmp_path / "s" / "index.safetensors").read_bytes() == (
        tmp_path / "whole" / "index.safetensors"
    ).read_bytes()


def test_pack_refuses_bad_input_in_one_line(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "genlab", "data", *args], env=ENV, capture_output=True, text=True)

    for args, msg in [(["pack", str(tmp_path / "nope"), "--out", str(tmp_path / "s")], "does not exist"),
                      (["pack", str(tmp_path)], "needs --out"),
                      (["verify", str(tmp_path)], "holds no manifest.json")]:  # fmt: skip
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow
def test_training_on_shards_resumes_bitwise_after_kill_9(tmp_path):
    src = _tree(tmp_path / "data", n=8)
    packed = subprocess.run([sys.executable, "-m", "genlab", "data", "pack", str(src), "--out", str(tmp_path / "s"),
                             "--resolution", "16", "--per-shard", "7"], env=ENV, capture_output=True, text=True)  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    args = ["--preset", "smoke", "data.name=shards", f"data.root={tmp_path / 's'}", "data.resolution=16", "train.steps=30",
            "train.checkpoint_every=10", "train.keep_checkpoints=10", "train.batch_size=8"]  # fmt: skip

    toytrain.assert_kill_9_resume_is_bitwise(args, tmp_path, ENV)
