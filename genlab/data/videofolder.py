"""``videofolder``: a user's own clips in class folders, ``ROOT/[SPLIT/]<class_name>/<clip>``, where a clip is a
video file (.mp4, .mkv, .mov, .avi, .webm, .gif, .m4v) or a folder of frame images (sorted by name).

Classes and splits follow ``imagefolder`` (class folders sorted by name; ``root/split`` when it exists). Clip ``i``
is the first ``frames`` frames taken every ``stride``-th from the clip's start, each frame reduced with
``imagefolder``'s ADM/DiT center crop, as ``{"image": float (3, T, H, W) in [-1, 1], "label": long}``: the layout of
``moving-openmoji``, so every video tokenizer and generator reads both.

Video files are decoded with PyAV (``pip install genlab[video]``): maintained FFmpeg bindings whose wheels carry
FFmpeg, so nothing has to be installed on the system. (torchvision's video readers are deprecated in favour of
torchcodec, which needs a system FFmpeg.) The scan opens every clip once, with a progress bar, and counts its
frames from the container's packets (no decoding), so an unreadable clip or one shorter than
``(frames - 1) * stride + 1`` frames is a ``DataError`` naming the file before training starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.data.base import DataError, to_float
from genlab.data.imagefolder import _class_dirs, _data_dir, _is_image, center_crop, load_image, to_rgb
from genlab.registry import register

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".gif", ".m4v")
LAYOUT = (
    "expected ROOT/<class_name>/<clip> (or ROOT/<split>/<class_name>/<clip>), a clip being a video file "
    f"({', '.join(VIDEO_EXTENSIONS)}) or a folder of frame images"
)


def _av():
    try:
        import av
    except ImportError as e:
        raise DataError("videofolder reads video files with PyAV: pip install 'genlab[video]' (or av)") from e
    return av


def _is_video(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def _frame_files(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if _is_image(e.name) and e.is_file())


def count_frames(path: str) -> int:
    """Frames of a clip: the images of a frame folder, or the video packets of a file's first video stream."""
    try:
        if os.path.isdir(path):
            return len(_frame_files(path))
        with _av().open(path) as container:
            if not container.streams.video:
                raise DataError(f"cannot read clip {path}: no video stream")
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except DataError:
        raise
    except Exception as e:  # PyAV raises its FFmpeg errors, OSError, ... for bad files
        raise DataError(f"cannot read clip {path}: {str(e) or type(e).__name__}") from e


def read_frames(path: str, frames: int, stride: int, resolution: int) -> list[Image.Image]:
    """Frames 0, stride, 2 stride, ... (``frames`` of them) of a clip, each RGB and center-cropped."""
    wanted = [k * stride for k in range(frames)]
    if os.path.isdir(path):
        names = _frame_files(path)
        if len(names) <= wanted[-1]:
            raise DataError(f"clip {path} has {len(names)} frames, needs {wanted[-1] + 1}")
        return [load_image(os.path.join(path, names[k]), resolution) for k in wanted]
    out: list[Image.Image] = []
    try:
        with _av().open(path) as container:
            for k, frame in enumerate(container.decode(video=0)):
                if k == wanted[len(out)]:
                    out.append(center_crop(to_rgb(frame.to_image()), resolution))
                    if len(out) == frames:
                        break
    except Exception as e:
        raise DataError(f"cannot read clip {path}: {str(e) or type(e).__name__}") from e
    if len(out) < frames:
        raise DataError(f"clip {path} decoded {k + 1 if out else 0} frames, needs {wanted[-1] + 1}")
    return out


def _scan_clips(class_dir: str, prefix: str) -> list[str]:
    """Clips directly in ``class_dir`` (video files and frame folders), relative to the data folder, sorted."""
    try:
        with os.scandir(class_dir) as it:
            entries = sorted((e.name, e.is_dir()) for e in it if not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"cannot list video folder {class_dir}: {e}") from e
    return [f"{prefix}/{name}" for name, is_dir in entries if is_dir or _is_video(name)]


@register("dataset", "videofolder")
class VideoFolderDataset(torch.utils.data.Dataset):
    """A user's clips in class folders (module docstring)."""

    @dataclass
    class Config:
        root: str = ""  # ROOT/<class_name>/<clip> (or ROOT/<split>/<class_name>/<clip>)
        resolution: int = 32  # ADM/DiT center crop of every frame to this side
        frames: int = 9  # T frames per clip
        stride: int = 1  # take every stride-th frame from the clip's start
        split: str = "train"  # a subfolder of root if it exists, else root itself
        hflip: bool = False  # random horizontal flip of the whole clip (the trainer decides per sample)
        num_classes: int = 0  # expected number of class folders; 0 = whatever is found

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")
            if self.frames < 1 or self.stride < 1:
                raise ValueError(f"frames and stride must be positive, got {self.frames} and {self.stride}")
            if self.num_classes < 0:
                raise ValueError(f"num_classes must be >= 0 (0 = count the class folders), got {self.num_classes}")
            if self.split in (".", "..") or "/" in self.split or "\\" in self.split:
                raise ValueError(f"split must be a plain folder name such as train or val, got {self.split!r}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        return cfg.num_classes or len(_class_dirs(_data_dir(cfg, LAYOUT, "video folder")))

    def __init__(self, cfg: Config, *, progress: bool = True):
        from tqdm.auto import tqdm

        cfg.validate()
        self.cfg, self.hflip = cfg, cfg.hflip
        self.data_dir = _data_dir(cfg, LAYOUT, "video folder")
        self.class_names = _class_dirs(self.data_dir)
        if cfg.num_classes and len(self.class_names) != cfg.num_classes:
            raise DataError(f"video folder {self.data_dir} has {len(self.class_names)} class folders, expected "
                            f"{cfg.num_classes}; set data.num_classes=0 to accept any number")  # fmt: skip
        clips, labels = [], []
        for label, name in enumerate(self.class_names):
            found = _scan_clips(os.path.join(self.data_dir, name), name)
            clips += found
            labels += [label] * len(found)
        if not clips:
            raise DataError(f"no clips in class folders of {self.data_dir}; {LAYOUT}")
        need = (cfg.frames - 1) * cfg.stride + 1
        for rel in tqdm(clips, desc="scanning clips", unit="clip", disable=not progress or None):
            have = count_frames(os.path.join(self.data_dir, rel))
            if have < need:
                raise DataError(f"clip {os.path.join(self.data_dir, rel)} has {have} frames, needs {need} "
                                f"(data.frames={cfg.frames}, data.stride={cfg.stride})")  # fmt: skip
        self._clips = np.array([os.fsencode(p) for p in clips])  # one byte array: shared by forked workers
        self._labels = np.asarray(labels, dtype=np.int64)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def __len__(self) -> int:
        return len(self._clips)

    def path(self, i: int) -> str:
        return os.path.join(self.data_dir, os.fsdecode(self._clips[i]))

    def __getitem__(self, item: int | tuple[int, bool]) -> dict[str, Tensor]:
        i, flip = item if isinstance(item, (tuple, list)) else (item, False)
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} clips")
        i %= len(self)
        frames = read_frames(self.path(i), self.cfg.frames, self.cfg.stride, self.cfg.resolution)
        arr = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])  # (T, R, R, 3)
        clip = to_float(torch.from_numpy(arr).permute(3, 0, 1, 2).contiguous())  # (3, T, R, R)
        if self.hflip and bool(flip):
            clip = clip.flip(-1)
        return {"image": clip, "label": torch.tensor(self._labels[i], dtype=torch.long)}
