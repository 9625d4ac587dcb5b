"""Where images to evaluate come from: an .npz batch, a folder, a dataset, or a generator callable.

Each source has ``n`` images of one ``resolution`` and hands out uint8 (B, 3, H, W) slices by
global index, so a process can take its own share without reading the rest and nothing is held
in memory beyond one batch (the .npz is memory-mapped where numpy allows).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.data import to_uint8
from genlab.evals.base import EvalError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageSource:
    n: int
    resolution: int
    description: str

    def batch(self, start: int, stop: int) -> Tensor:  # (stop - start, 3, H, W) uint8
        raise NotImplementedError


def npz_member(path: Path | str, key: str) -> np.ndarray:
    """Array ``key`` of an .npz, memory-mapped when stored uncompressed (as ``np.savez`` and ADM write it).

    ``np.load`` ignores ``mmap_mode`` for .npz members and would read a 50k-image batch (~10 GB at
    256 px) whole; here only the slices asked for are read.
    """
    try:
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{key}.npy")
        if info.compress_type == zipfile.ZIP_STORED:
            fmt = np.lib.format
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                local = f.read(30)  # the local file header; name and extra field lengths at bytes 26..29
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = fmt.read_magic(f)
                read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
                header = read(f) if read else None
                offset = f.tell()
            if header is not None and not header[2].hasobject:
                shape, fortran, dtype = header
                return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except KeyError:
        with np.load(path, allow_pickle=False) as data:
            keys = ", ".join(data.files)
        raise EvalError(f"{path} has no {key!r} array (keys: {keys}); expected uint8 (N, H, W, 3)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise EvalError(f"{path} is not a readable .npz: {e}") from None


class NpzImages(ImageSource):
    """``arr_0``: uint8 (N, H, W, 3), as ADM's evaluator and ``genlab sample --format npz`` write it."""

    def __init__(self, path: Path | str, key: str = "arr_0"):
        self.path = Path(path)
        arr = npz_member(self.path, key)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[1] != arr.shape[2]:
            raise EvalError(f"{self.path}: {key} must be uint8 (N, H, W, 3) square images, got {arr.dtype} {arr.shape}")
        if arr.shape[0] == 0:
            raise EvalError(f"{self.path}: {key} holds no images")
        self.arr, self.n, self.resolution = arr, arr.shape[0], arr.shape[1]
        self.description = str(self.path)

    def batch(self, start: int, stop: int) -> Tensor:
        return torch.from_numpy(np.array(self.arr[start:stop])).permute(0, 3, 1, 2).contiguous()  # a copy: writable


class FolderImages(ImageSource):
    """Every image file below a folder (sorted paths), converted to RGB; all must share one square size."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EvalError(f"image folder {self.root} does not exist")
        self.files = sorted(
            p for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        )  # fmt: skip
        if not self.files:
            raise EvalError(f"image folder {self.root} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        with Image.open(self.files[0]) as img:
            w, h = img.size
        if w != h:
            raise EvalError(f"{self.files[0]} is {w}x{h}; evaluation expects square images of one size")
        self.n, self.resolution = len(self.files), w
        self.description = str(self.root)

    def batch(self, start: int, stop: int) -> Tensor:
        out = []
        for path in self.files[start:stop]:
            try:
                with Image.open(path) as img:
                    arr = np.asarray(img.convert("RGB"))
            except OSError as e:
                raise EvalError(f"cannot read image {path}: {e}") from None
            if arr.shape[:2] != (self.resolution, self.resolution):
                raise EvalError(
                    f"{path} is {arr.shape[1]}x{arr.shape[0]}, the folder's first image is {self.resolution}x{self.resolution}"
                )
            out.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        return torch.stack(out)


class DatasetImages(ImageSource):
    """The first ``n`` images of a genlab dataset (uint8 in memory when it has them, else decoded per item)."""

    def __init__(self, dataset, n: int | None = None, description: str = "dataset"):
        total = len(dataset)
        if total == 0:
            raise EvalError(f"{description} has no images")
        self.dataset, self.n = dataset, total if not n else min(n, total)
        images = getattr(dataset, "images", None)
        self.images = images if isinstance(images, Tensor) else None
        self.resolution = int(self.images.shape[-1]) if self.images is not None else int(dataset[0]["image"].shape[-1])
        self.description = description

    def batch(self, start: int, stop: int) -> Tensor:
        if self.images is not None:
            return self.images[start:stop]
        return torch.stack([to_uint8(self.dataset[i]["image"]) for i in range(start, stop)])


@dataclass
class GeneratedImages(ImageSource):
    """Images made on demand: ``make(start, stop)`` returns images ``start..stop-1`` (their seeds follow the index)."""

    make: Callable[[int, int], Tensor]  # -> uint8 (B, 3, H, W)
    n: int
    resolution: int
    description: str = "generated"

    def batch(self, start: int, stop: int) -> Tensor:
        return self.make(start, stop)


def open_images(path: Path | str) -> ImageSource:
    """A folder of images or an .npz holding ``arr_0``."""
    path = Path(path)
    if path.is_dir():
        return FolderImages(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise EvalError(f"{path} does not exist")
        return NpzImages(path)
    raise EvalError(f"{path} is neither an image folder nor an .npz file")
