"""Sample grids as PNG files: ``nrow`` images per row, optionally a label (a class name) left of each row.
Clips (B, 3, T, H, W), what a tokenizer with a time axis decodes to, become an animated GIF of such grids (one
grid per frame) beside a folder of the frames' PNG grids.

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


GIF_FRAME_MS = 125  # 8 frames per second


def save_grid(
    images: Tensor, path: Path | str, nrow: int, row_labels: Sequence[str] | None = None, *, fmt: str | None = None
) -> Path:
    """Save (B, 3, H, W) images in [-1, 1] as one PNG grid, ``nrow`` images per row; returns the path written
    (``fmt``: Pillow's format name, default from the file's extension).
    Clips (B, 3, T, H, W) go to ``path`` with the suffix ``.gif`` (looping, ``GIF_FRAME_MS`` per frame), their
    frames to ``<stem>_frames/frame_000.png`` ...; the GIF's path is returned.

    ``row_labels``: one text per row (``ceil(B / nrow)`` of them), drawn in black at the left of its row."""
    path = Path(path)
    if images.ndim == 5:
        return save_clip_grid(images, path, nrow, row_labels)
    image = grid_image(images, nrow, row_labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def save_clip_grid(clips: Tensor, path: Path, nrow: int, row_labels: Sequence[str] | None = None) -> Path:
    """(B, 3, T, H, W) clips -> an animated GIF grid at ``path.with_suffix(".gif")`` and T PNG frame grids."""
    frames = [grid_image(clips[:, :, k], nrow, row_labels) for k in range(clips.shape[2])]
    folder = path.parent / f"{path.stem}_frames"
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        frame.save(folder / f"frame_{k:03d}.png")
    gif = path.with_suffix(".gif")
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0, optimize=False)
    return gif


def grid_image(images: Tensor, nrow: int, row_labels: Sequence[str] | None = None):
    """(B, 3, H, W) images in [-1, 1] -> the grid as a PIL image (``save_grid``'s layout)."""
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
    return image
