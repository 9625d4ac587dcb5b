"""Image grids: a batch of images written as one PNG, one row per class."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from genlab.data import to_uint8


def save_grid(images: Tensor, path: Path, nrow: int) -> None:
    """Save (B, 3, H, W) images in [-1, 1] as one PNG grid, ``nrow`` images per row."""
    from PIL import Image

    B, _, H, W = images.shape
    rows = (B + nrow - 1) // nrow
    pad = 2
    canvas = torch.full((3, rows * (H + pad) + pad, nrow * (W + pad) + pad), 255, dtype=torch.uint8)
    u8 = to_uint8(images)
    for i in range(B):
        r, c = divmod(i, nrow)
        canvas[:, pad + r * (H + pad) : pad + r * (H + pad) + H, pad + c * (W + pad) : pad + c * (W + pad) + W] = u8[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
