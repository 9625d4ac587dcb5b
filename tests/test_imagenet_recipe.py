"""The ImageNet path on a fake ImageNet tree (1,000 class folders of synthetic JPEGs), on the CPU: pack it into
shards, train an ImageNet preset a few steps on them, sample an ADM-format .npz, evaluate it against the tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def genlab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genlab", *args], env=ENV, capture_output=True, text=True)


def fake_imagenet(root: Path, classes: int = 1000) -> Path:
    """ImageNet's layout (train/<synset>/<name>.JPEG), one small noisy JPEG per class, 24 more in the first class."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for k in range(25 if c == 0 else 1):
            arr = rng.integers(0, 256, (40 + c % 7, 36 + k % 5, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / f"n{c:08d}_{k}.JPEG", quality=90)
    return root


@pytest.mark.slow
def test_fake_imagenet_packs_trains_samples_and_evaluates(tmp_path):
    tree = fake_imagenet(tmp_path / "imagenet")
    shards = tmp_path / "shards"
    r = genlab("data", "pack", str(tree), "--out", str(shards), "--resolution", "32", "--num-classes", "1000",
               "--per-shard", "400")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1024 images of 1000 classes -> 3 shards" in r.stdout
    run = tmp_path / "run"
    r = genlab("train", "--preset", "imagenet256/dit-s-8", "data.name=shards", f"data.root={shards}",
               "data.resolution=32", "tokenizer.name=pixels", "train.steps=2", "train.batch_size=8",
               "train.num_workers=0", "train.mixed_precision=no", "train.tensorboard=false", "sample.steps=2",
               "--out", str(run))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    grid = Image.open(run / "samples" / "step_0000002.png")  # 8 fixed classes x 4, not 1,000 rows
    assert grid.height < 9 * 36
    r = genlab("sample", "--run", str(run), "--classes", "0,1,2,3", "--n", "4", "--steps", "2", "--out",
               str(tmp_path / "samples.npz"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    batch = np.load(tmp_path / "samples.npz")
    assert batch["arr_0"].shape == (16, 32, 32, 3) and batch["arr_0"].dtype == np.uint8
    from genlab.data import to_uint8
    from genlab.data.shards import ShardDataset

    packed = ShardDataset(ShardDataset.Config(root=str(shards), resolution=32, hflip=False))
    real = torch.stack([packed[i]["image"] for i in range(24)])  # the packed crops: the reference images
    np.savez(tmp_path / "real.npz", arr_0=to_uint8(real).permute(0, 2, 3, 1).numpy())
    r = genlab("eval", "--images", str(tmp_path / "samples.npz"), "--ref", str(tmp_path / "real.npz"),
               "--metrics", "fid", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["fid"] > 0
