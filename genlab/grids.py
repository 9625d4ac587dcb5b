"""Sample grids as PNG files: ``nrow`` images per row, optionally a label (a class name) left of each row.

The labels are drawn with Pillow's bundled font (scalable where Pillow has FreeType, else its bitmap font),
so nothing depends on the fonts a machine happens to have.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from genlab.data import to_uint8

PAD = 2  # white pixels between and around the images
LABEL_MARGIN = 6  # white pixels left and right of a label


def _font(height: int):
    """Pillow's default font at about a third of an image's height (at least 10 px, at most 16 px)."""
    from PIL import ImageFont

    size = max(10, min(16, height // 3))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError, ImportError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def save_grid(
    images: Tensor, path: Path | str, nrow: int, row_labels: Sequence[str] | None = None, *, fmt: str | None = None
) -> None:
    """Save (B, 3, H, W) images in [-1, 1] as one PNG grid, ``nrow`` images per row (``fmt``: Pillow's format name,
    default from the file's extension).

    ``row_labels``: one text per row (``ceil(B / nrow)`` of them), drawn in black at the left of its row."""
    from PIL import Image, ImageDraw

    B, _, H, W = images.shape
    if nrow <= 0:
        raise ValueError(f"nrow must be positive, got {nrow}")
    rows = (B + nrow - 1) // nrow
    labels = list(row_labels) if row_labels is not None else []
    if row_labels is not None and len(labels) != rows:
        raise ValueError(f"{len(labels)} row labels for {rows} rows ({B} images, {nrow} per row)")
    font = _font(H) if labels else None
    widths = [font.getbbox(str(t))[2] for t in labels] if font is not None else []
    left = (max(widths) + 2 * LABEL_MARGIN) if widths and max(widths) > 0 else 0  # the label column
    canvas = torch.full((3, rows * (H + PAD) + PAD, left + nrow * (W + PAD) + PAD), 255, dtype=torch.uint8)
    u8 = to_uint8(images)  # (B, 3, H, W)
    for i in range(B):
        r, c = divmod(i, nrow)
        y, x = PAD + r * (H + PAD), left + PAD + c * (W + PAD)
        canvas[:, y : y + H, x : x + W] = u8[i]
    image = Image.fromarray(canvas.permute(1, 2, 0).numpy())  # (H', W', 3)
    if left:
        draw = ImageDraw.Draw(image)
        for r, text in enumerate(labels):
            top, bottom = font.getbbox(str(text))[1::2]
            y = PAD + r * (H + PAD) + (H - (bottom - top)) // 2 - top  # centred on the row
            draw.text((LABEL_MARGIN, y), str(text), fill=(0, 0, 0), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
