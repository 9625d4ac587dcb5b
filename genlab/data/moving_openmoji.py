"""``moving-openmoji``: clips of T frames in which one or two OpenMoji glyphs move, rotate and scale along smooth
random paths over a plain background; the class is the glyphs' Unicode emoji group.

Glyphs are ``genlab.data.openmoji``'s renders (the same glyphs, groups and cache). Clip ``i`` is a pure function
of ``(seed, split, i)``: its glyphs, background colour and paths come from ``numpy.random.default_rng`` seeded
with them, so a clip is the same on every machine, batch split and epoch, and nothing is stored but the glyphs.

Each glyph's path over the clip time ``u = k / (T - 1)`` in [0, 1] (frame k) is smooth by construction:

- centre ``c(u) = c0 + v u + a sin(2 pi f u + phi)`` (a drift and one slow wobble, per axis);
- angle ``theta(u) = theta0 + omega u`` (|omega| <= ``max_rotation``);
- scale ``s(u) = s0 (1 + ds sin(2 pi u + psi))``.

Frames are drawn by ``grid_sample`` (bilinear) of the glyph (rendered on white) under the inverse affine map,
the glyphs multiplied together (white is the identity of a multiply blend) and by the clip's background colour.

**How a clip travels.** Items are ``{"image": float (3, T, H, W) in [-1, 1], "label": long}``: the clip rides
in the ``image`` key with a time axis after the channels, so the trainer, tasks and batching that move images
move clips unchanged; a tokenizer with ``frames: T`` (ViTok) reads it, and an image is a 1-frame clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.base import DataError
from genlab.data.openmoji import SKIN_TONES, load_emoji_groups, load_openmoji
from genlab.registry import register

_SPLIT_STREAM = {"train": 0, "val": 1}  # the clip streams of the two splits never share a (seed, stream, i)


@dataclass(frozen=True)
class GlyphPath:
    """One glyph's smooth path (module docstring); positions in [-1, 1] frame coordinates."""

    c0: tuple[float, float]
    v: tuple[float, float]
    a: tuple[float, float]
    f: tuple[float, float]
    phi: tuple[float, float]
    theta0: float
    omega: float
    s0: float
    ds: float
    psi: float

    def at(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(cx, cy, theta, scale), each (T,), at clip times ``u`` (T,)."""
        cx, cy = (self.c0[d] + self.v[d] * u + self.a[d] * np.sin(2 * math.pi * self.f[d] * u + self.phi[d])
                  for d in (0, 1))  # fmt: skip
        theta = self.theta0 + self.omega * u
        scale = self.s0 * (1 + self.ds * np.sin(2 * math.pi * u + self.psi))
        return cx, cy, theta, scale


def random_path(rng: np.random.Generator, max_rotation: float, scale: tuple[float, float]) -> GlyphPath:
    """A path that keeps the glyph's centre inside the frame's middle (|c| <= 0.6 at all u)."""
    c0 = tuple(rng.uniform(-0.35, 0.35, 2))
    v = tuple(rng.uniform(-0.2, 0.2, 2) - np.array(c0) * 0.5)  # drift, pulled towards the middle
    return GlyphPath(
        c0=c0, v=v, a=tuple(rng.uniform(0.0, 0.1, 2)), f=tuple(rng.uniform(0.3, 1.0, 2)),
        phi=tuple(rng.uniform(0, 2 * math.pi, 2)), theta0=float(rng.uniform(-0.3, 0.3)),
        omega=float(rng.uniform(-max_rotation, max_rotation)), s0=float(rng.uniform(*scale)),
        ds=float(rng.uniform(0.0, 0.15)), psi=float(rng.uniform(0, 2 * math.pi)),
    )  # fmt: skip


def draw_glyph(glyph: Tensor, path: GlyphPath, frames: int, resolution: int) -> Tensor:
    """A glyph (3, R, R) in [0, 1] on white along ``path`` -> (T, 3, H, W) in [0, 1], white outside it."""
    u = np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)
    cx, cy, theta, scale = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in path.at(u))
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    # output coords p -> glyph coords R(-theta) (p - c) / s: the inverse of "scale, rotate, move to c"
    affine = torch.stack(
        [torch.stack([cos, sin, -(cos * cx + sin * cy)], -1), torch.stack([-sin, cos, -(-sin * cx + cos * cy)], -1)], 1
    ).float()  # (T, 2, 3) fmt: skip
    grid = F.affine_grid(affine, [frames, 3, resolution, resolution], align_corners=False)
    ink = 1.0 - glyph.unsqueeze(0).expand(frames, -1, -1, -1)  # 0 on white, so zero padding is white
    return 1.0 - F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@register("dataset", "moving-openmoji")
class MovingOpenMojiDataset(torch.utils.data.Dataset):
    """Clips rendered on the fly from OpenMoji glyphs, deterministic per (seed, split, index)."""

    @dataclass
    class Config:
        resolution: int = 32  # frame side in pixels
        frames: int = 9  # T frames per clip (the default; 16 also fits ViTok's tubelets)
        clips: int = 4096  # clips per epoch of the split (any index < clips is a distinct, fixed clip)
        split: Literal["train", "val"] = "train"  # train and val clips come from disjoint random streams
        max_glyphs: int = 2  # each clip shows 1..max_glyphs glyphs, all of one emoji group (its label)
        scale: tuple[float, float] = (0.45, 0.7)  # glyph size range, as a fraction of the frame side
        max_rotation: float = 1.0  # the largest total rotation over a clip, radians
        limit: int = 0  # glyphs from openmoji's first N (sorted by code points); 0 = all
        skin_tones: bool = False  # keep the skin-tone variants (off: they crowd People & Body)
        seed: int = 0  # the dataset's seed; clip i of a seed is always the same clip

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")
            if self.frames < 1 or self.clips < 1 or self.limit < 0:
                raise ValueError("frames and clips must be positive and limit >= 0")
            if self.max_glyphs not in (1, 2):
                raise ValueError(f"max_glyphs must be 1 or 2, got {self.max_glyphs}")
            if len(self.scale) != 2 or not 0.05 <= self.scale[0] <= self.scale[1] <= 1.5:
                raise ValueError(f"scale must be LO,HI with 0.05 <= LO <= HI <= 1.5, got {self.scale}")
            if not (math.isfinite(self.max_rotation) and 0 <= self.max_rotation <= 2 * math.pi):
                raise ValueError(f"max_rotation must be in [0, 2 pi], got {self.max_rotation}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        return len(load_emoji_groups().groups)

    def __init__(self, cfg: Config):
        cfg.validate()
        self.cfg = cfg
        data = load_openmoji(cfg.resolution, cfg.limit)
        keep = [
            i for i, cp in enumerate(data["codepoints"]) if cfg.skin_tones or not SKIN_TONES & set(str(cp).split("-"))
        ]
        self.glyphs = torch.from_numpy(data["images"][keep]).float() / 255.0  # (N, 3, R, R) in [0, 1]
        groups = torch.from_numpy(data["group"][keep])
        self.class_names = [str(n) for n in data["group_names"]]
        self.by_class = [torch.nonzero(groups == c).flatten() for c in range(len(self.class_names))]
        self.present = [c for c, g in enumerate(self.by_class) if len(g)]  # groups with at least one glyph
        if not self.present:
            raise DataError("moving-openmoji: no glyph left (raise limit, or keep skin tones)")

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def __len__(self) -> int:
        return self.cfg.clips

    def clip(self, index: int) -> tuple[Tensor, int]:
        """Clip ``index``: (3, T, H, W) in [-1, 1] and its class id."""
        cfg = self.cfg
        if not 0 <= index < cfg.clips:
            raise IndexError(f"clip {index} out of range 0..{cfg.clips - 1}")
        rng = np.random.default_rng((cfg.seed, _SPLIT_STREAM[cfg.split], index))
        label = self.present[int(rng.integers(len(self.present)))]
        pool = self.by_class[label]
        count = int(rng.integers(1, cfg.max_glyphs + 1))
        frame = torch.from_numpy(rng.uniform(0.75, 1.0, 3)).float().view(1, 3, 1, 1)  # plain background colour
        frame = frame.expand(cfg.frames, 3, cfg.resolution, cfg.resolution)
        for _ in range(count):
            glyph = self.glyphs[int(pool[int(rng.integers(len(pool)))])]
            frame = frame * draw_glyph(glyph, random_path(rng, cfg.max_rotation, cfg.scale), cfg.frames, cfg.resolution)
        return frame.permute(1, 0, 2, 3).mul(2).sub(1).contiguous(), label  # (3, T, H, W)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        video, label = self.clip(int(i))
        return {"image": video, "label": torch.tensor(label, dtype=torch.long)}

    def get_batch(self, idx: Tensor, flip: Tensor | None = None) -> dict[str, Tensor]:
        """Clips ``idx`` (B, 3, T, H, W) with labels; never flipped (glyphs are not mirror-symmetric)."""
        clips = [self.clip(int(i)) for i in idx]
        return {
            "image": torch.stack([c for c, _ in clips]),
            "label": torch.tensor([lab for _, lab in clips], dtype=torch.long),
        }
