"""Images on disk in an ImageNet-style tree ``ROOT/[SPLIT/]<class_name>/<image files>``.

Classes are the sub-folders of the data folder (``root/split`` when that folder exists, else
``root``), sorted by name, so for ImageNet class ``i`` is the ``i``-th synset in sorted order
(``n01440764`` is 0), as torchvision's ``ImageFolder`` and DiT number them. Images are files
ending in .jpg/.jpeg/.png/.webp/.bmp (any case) anywhere below a class folder; hidden files and
folders (names starting with ".", such as macOS ``._*`` resource forks) are skipped. The file
list is built once with ``os.scandir`` and kept as one numpy byte array, so DataLoader workers
do not copy it page by page through Python reference counts.

Each image is decoded with Pillow (truncated or unreadable files raise ``DataError`` naming the
file), converted to RGB and reduced with the ADM/DiT center crop (``center_crop``: halve with a
BOX filter while the short side is at least twice the target, BICUBIC-resize the short side to
the target, crop the centre square), which matches guided-diffusion's ``center_crop_arr`` used by
DiT's ``train.py``. Like them, EXIF orientation is not applied. Images with transparency are
composited on white (DiT drops the alpha channel instead; ImageNet has no such images), and
16-bit grayscale PNGs are scaled to 8 bits rather than clipped.

The dataset is not held in memory: the trainer reads it through a DataLoader whose batch sampler
yields ``(index, flip)`` pairs, so ``__getitem__`` takes either an index or such a pair; the flip
is applied only when ``hflip`` is on.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.data.base import DataError, to_float
from genlab.registry import register

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_SPLIT_NAMES = ("train", "val", "validation", "test")
_LAYOUT = "expected an ImageNet-style tree ROOT/<class_name>/<image files> (or ROOT/<split>/<class_name>/<image files>)"


def center_crop(img: Image.Image, resolution: int) -> Image.Image:
    """The ADM/DiT center crop: BOX-halve while the short side >= 2R, BICUBIC to short side R, crop R x R."""
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    while min(img.size) >= 2 * resolution:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.Resampling.BOX)
    scale = resolution / min(img.size)
    size = (max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale)))
    if size != img.size:
        img = img.resize(size, resample=Image.Resampling.BICUBIC)
    left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
    return img.crop((left, top, left + resolution, top + resolution))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: transparency composited on white, 16-bit gray scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint32) >> 8  # 0..65535 -> 0..255 (Pillow would clip instead)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (img.mode in ("P", "L", "RGB") and img.has_transparency_data):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str, resolution: int) -> Image.Image:
    """Decode ``path`` fully, as an RGB ``resolution`` square; any failure is a ``DataError`` naming the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # replaced by a FIFO, socket or device since the scan
            raise DataError(f"cannot read image {path}: not a regular file")
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here (ImageFile.LOAD_TRUNCATED_IMAGES is left alone)
            rgb = to_rgb(img)
            return center_crop(rgb, resolution)
    except DataError:
        raise
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ... for bad files
        reason = str(e) or type(e).__name__
        raise DataError(f"cannot read image {path}: {reason}") from e


def _data_dir(cfg, layout: str = _LAYOUT, kind: str = "image folder") -> str:
    """The folder whose sub-folders are the classes: ``root/split`` if it exists, else ``root`` (``cfg`` has
    ``root`` and ``split``; ``layout`` and ``kind`` word the errors)."""
    if not cfg.root:
        raise DataError(f"data.root is not set; {layout}")
    root = os.path.abspath(os.path.expanduser(cfg.root))
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"{kind} {root} {what}; {layout}")
    if cfg.split:
        split_dir = os.path.join(root, cfg.split)
        if os.path.isdir(split_dir):
            return split_dir
        others = [s for s in _SPLIT_NAMES if os.path.isdir(os.path.join(root, s))]
        if others:
            raise DataError(
                f"{kind} {root} has split folders {', '.join(others)} but no {cfg.split!r}; "
                f"set data.split to one of them"
            )
    return root


def _class_dirs(data_dir: str) -> list[str]:
    try:
        with os.scandir(data_dir) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except OSError as e:
        raise DataError(f"cannot list image folder {data_dir}: {e}") from e


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan_class(class_dir: str, prefix: str) -> list[str]:
    """Image paths below ``class_dir`` relative to the data folder, sorted (sub-folders after files)."""
    files, subdirs = [], []
    try:
        with os.scandir(class_dir) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    if not e.is_symlink():  # no loops through linked folders
                        subdirs.append(e.name)
                elif _is_image(e.name) and e.is_file():  # a FIFO or device named x.png would block its reader
                    files.append(e.name)
    except OSError as e:
        raise DataError(f"cannot list image folder {class_dir}: {e}") from e
    out = [f"{prefix}/{f}" for f in sorted(files)]
    for d in sorted(subdirs):
        out.extend(_scan_class(os.path.join(class_dir, d), f"{prefix}/{d}"))
    return out


@register("dataset", "imagefolder")
class ImageFolderDataset(torch.utils.data.Dataset):
    @dataclass
    class Config:
        root: str = ""  # an ImageNet-style tree: ROOT/<class_name>/<image files>
        resolution: int = 256  # ADM/DiT center crop to this side (256 or 512 for ImageNet)
        split: str = "train"  # a subfolder of root if it exists (root/train, root/val), else root itself
        hflip: bool = True  # random horizontal flip (the trainer decides per sample: the flag in (index, flip))
        num_classes: int = 1000  # expected number of class folders; 0 = whatever is found

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")
            if self.num_classes < 0:
                raise ValueError(f"num_classes must be >= 0 (0 = count the class folders), got {self.num_classes}")
            if self.split in (".", "..") or "/" in self.split or "\\" in self.split:
                raise ValueError(f"split must be a plain folder name such as train or val, got {self.split!r}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        if cfg.num_classes > 0:
            return cfg.num_classes
        return len(_class_dirs(_data_dir(cfg)))

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.hflip = cfg.hflip
        self.data_dir = _data_dir(cfg)
        self.class_names = _class_dirs(self.data_dir)
        if cfg.num_classes and len(self.class_names) != cfg.num_classes:
            raise DataError(
                f"image folder {self.data_dir} has {len(self.class_names)} class folders, expected "
                f"{cfg.num_classes}; set data.num_classes=0 to accept any number"
            )
        paths: list[str] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            found = _scan_class(os.path.join(self.data_dir, name), name)
            paths.extend(found)
            labels.extend([label] * len(found))
        if not paths:
            loose = [n for n in os.listdir(self.data_dir) if _is_image(n)]
            hint = f" ({len(loose)} images lie directly in it, outside class folders)" if loose else ""
            raise DataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders of {self.data_dir}{hint}; {_LAYOUT}"
            )
        # one flat byte array (not a list of str) so forked DataLoader workers share it
        self._paths = np.array([os.fsencode(p) for p in paths])
        self._labels = np.asarray(labels, dtype=np.int64)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, i: int) -> str:
        """Full path of image ``i``."""
        return os.path.join(self.data_dir, os.fsdecode(self._paths[i]))

    def label(self, i: int) -> int:
        return int(self._labels[i])

    def __getitem__(self, item: int | tuple[int, bool]) -> dict[str, Tensor]:
        if isinstance(item, (tuple, list)):
            i, flip = item
        else:
            i, flip = item, False
        i = int(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} images")
        i %= n
        img = load_image(self.path(i), self.cfg.resolution)
        arr = np.asarray(img, dtype=np.uint8)  # (R, R, 3)
        image = to_float(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        if self.hflip and bool(flip):
            image = image.flip(-1)
        return {"image": image, "label": torch.tensor(self._labels[i], dtype=torch.long)}
