"""The dataset contract and an in-memory dataset every small dataset reuses.

Every dataset yields ``{"image": float (3, H, W) in [-1, 1], "label": long}`` and has
``class_names``. Datasets small enough to hold in memory keep uint8 tensors and hand out
whole batches by index (``get_batch``), so the trainer needs no DataLoader for them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class DataError(RuntimeError):
    """A dataset that cannot be built or read; the message names the file or package."""


def to_float(images_u8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images_u8.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def cache_dir() -> Path:
    """Where rendered datasets and other derived files are cached (``GENLAB_CACHE`` overrides)."""
    root = os.environ.get("GENLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "genlab"
    )
    return Path(root)


def split_indices(n: int, split: str, val_fraction: float, seed: int = 0) -> np.ndarray:
    """A deterministic train/val split of ``range(n)``: the same for every machine and run."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    if split == "train":
        idx = perm[n_val:]
    elif split == "val":
        idx = perm[:n_val]
    elif split == "all":
        idx = perm
    else:
        raise DataError(f"unknown split {split!r}; use train, val or all")
    return np.sort(idx)


def stable_key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def batch_by_index(dataset, idx: Tensor) -> dict[str, Tensor]:
    """``{"image", "label"}`` of the samples ``idx``, no flips: the dataset's ``get_batch`` when it has one, else
    its items stacked."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    items = [dataset[int(i)] for i in idx]
    return {
        "image": torch.stack([it["image"] for it in items]),
        "label": torch.as_tensor([int(it["label"]) for it in items]),
    }


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held in memory as uint8 (N, 3, H, W) with long labels (N,)."""

    def __init__(self, images: Tensor, labels: Tensor, class_names: list[str], *, hflip: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"expected uint8 images of shape (N, 3, H, W), got {tuple(images.shape)} {images.dtype}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"expected {images.shape[0]} labels, got shape {tuple(labels.shape)}")
        self.images = images.contiguous()
        self.labels = labels.long()
        self.class_names = list(class_names)
        self.hflip = hflip

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": to_float(self.images[i]), "label": self.labels[i]}

    def get_batch(self, idx: Tensor, flip: Tensor | None = None) -> dict[str, Tensor]:
        """A whole batch by index; ``flip`` (bool, per sample) mirrors images when ``hflip`` is on."""
        images = to_float(self.images[idx])  # (B, 3, H, W)
        if self.hflip and flip is not None and bool(flip.any()):
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        return {"image": images, "label": self.labels[idx]}
