"""scikit-learn's 8x8 handwritten digits, upsampled to RGB: the smoke-test dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from genlab.data.base import DataError, TensorImageDataset, split_indices
from genlab.registry import register


@register("dataset", "digits")
class DigitsDataset(TensorImageDataset):
    @dataclass
    class Config:
        resolution: int = 16  # output side in pixels (bilinear upsampling from 8x8)
        split: Literal["train", "val", "all"] = "train"
        val_fraction: float = 0.1
        hflip: bool = False  # digits are not mirror-symmetric: off by default

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        return 10

    def __init__(self, cfg: Config):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("the digits dataset needs scikit-learn: pip install 'genlab[data]'") from None
        bunch = load_digits()
        x = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
        x = F.interpolate(x, size=(cfg.resolution, cfg.resolution), mode="bilinear", align_corners=False)
        images = (1.0 - x.clamp(0, 1)).mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)  # dark ink on white
        labels = torch.from_numpy(bunch.target).long()
        idx = torch.from_numpy(split_indices(len(labels), cfg.split, cfg.val_fraction))
        super().__init__(images[idx], labels[idx], [str(d) for d in range(10)], hflip=cfg.hflip)
