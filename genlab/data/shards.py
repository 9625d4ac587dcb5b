"""Image shards that stream: WebDataset-layout tar files with a genlab index, read sample by sample by offset.

``genlab data pack FOLDER --out SHARDS`` writes an ImageNet-style folder (``genlab.data.imagefolder``) as tar shards
``shard-000000.tar …`` in the WebDataset layout (members ``KEY.png`` or ``KEY.jpg`` and ``KEY.cls``, the label as
ASCII), so webdataset, wids, litdata and plain ``tar`` read them too, plus

- ``manifest.json``: class names, the stored resolution (0: the original files, cropped when read), the sample count
  and every shard's name, byte size and sha256;
- ``index.safetensors``: per sample its shard, the byte offset and size of its image inside the tar, its label and
  the CRC-32 of those bytes (tensors only: nothing to unpickle).

The dataset (``data: {name: shards, root: SHARDS}``) is map-style: sample ``i`` is read by one ranged read of its
bytes, so the trainer's data plan, per-sample seeds and exact resume work as for a folder, and the data never has
to fit in memory. ``root`` is a folder or an fsspec URL (``s3://…``, ``gs://…``, with that filesystem's fsspec
package installed), read with one open file per shard and process. Every read checks the sample's CRC-32 and every
shard's size is checked when it is first opened; ``genlab data verify SHARDS`` hashes whole shards against the
manifest. A mismatch is a ``DataError`` naming the shard.

Why not a streaming reader's own order (webdataset's shuffle buffers, mosaicml-streaming, litdata): each replaces
genlab's data plan with its own sample order and resume state, and image i would no longer come with seed i.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.data.base import DataError, to_float
from genlab.data.imagefolder import ImageFolderDataset, center_crop, load_image, to_rgb
from genlab.registry import register
from genlab.safeio import CorruptFileError, read_json_checked, sha256_file

MANIFEST, INDEX = "manifest.json", "index.safetensors"
FORMAT = "genlab-shards/1"


def _shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def _encode(path: str, resolution: int) -> tuple[bytes, str]:
    """A sample's stored bytes: the ADM center crop as PNG (lossless: the folder's pixels exactly), or the file."""
    if resolution == 0:
        load_image(path, 8)  # decodes fully: an unreadable file fails at packing, naming it
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        return Path(path).read_bytes(), "jpg" if ext == "jpeg" else ext
    buf = io.BytesIO()
    load_image(path, resolution).save(buf, format="PNG")
    return buf.getvalue(), "png"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Append one member; returns the byte offset of its data in the tar file."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    offset = tar.offset + len(info.tobuf(tar.format, tar.encoding, tar.errors))  # after its header block(s)
    tar.addfile(info, io.BytesIO(data))
    return offset


def pack(folder: ImageFolderDataset, out: Path | str, *, resolution: int, per_shard: int = 5000,
         progress: bool = True) -> dict:  # fmt: skip
    """Write ``folder``'s images as shards in ``out`` (see the module docstring); returns the manifest.

    A shard is written to a temporary name and renamed when complete, and finished shards are kept by a rerun with
    the same folder and options, so an interrupted pack continues where it stopped."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = len(folder)
    plan = {"format": FORMAT, "resolution": resolution, "per_shard": per_shard, "num_samples": n,
            "class_names": folder.class_names,
            "files": hashlib.sha256(b"\0".join(folder._paths.tolist())).hexdigest()}  # fmt: skip
    done_file = out / "progress.jsonl"
    done = _finished_shards(done_file, plan)
    columns = {k: np.zeros(n, dtype=np.int64) for k in ("shard", "offset", "size", "label", "crc32")}
    shards = []
    bar = tqdm(total=n, desc="pack", unit="img", disable=not progress, dynamic_ncols=True)
    for s, start in enumerate(range(0, n, per_shard)):
        stop = min(start + per_shard, n)
        entry = done.get(s) or _write_shard(folder, out, s, range(start, stop), resolution)
        if s not in done:
            with open(done_file, "a") as f:
                f.write(json.dumps({"plan": plan, "shard": entry}) + "\n")
        for k in ("offset", "size", "crc32"):
            columns[k][start:stop] = entry["samples"][k]
        columns["shard"][start:stop] = s
        columns["label"][start:stop] = folder._labels[start:stop]
        shards.append({k: entry[k] for k in ("name", "bytes", "sha256", "count")})
        bar.update(stop - start)
    bar.close()
    save_file({k: torch.from_numpy(v) for k, v in columns.items()}, str(out / INDEX))
    manifest = {k: plan[k] for k in ("format", "resolution", "num_samples", "class_names")} | {"shards": shards}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    done_file.unlink()
    return manifest


def _finished_shards(done_file: Path, plan: dict) -> dict[int, dict]:
    """Shards a previous run of the same plan completed (their files still of the recorded size)."""
    done = {}
    if done_file.is_file():
        for line in done_file.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            entry = rec.get("shard", {})
            path = done_file.parent / str(entry.get("name", ""))
            if rec.get("plan") == plan and path.is_file() and path.stat().st_size == entry.get("bytes"):
                done[int(entry["index"])] = entry
    return done


def _write_shard(folder: ImageFolderDataset, out: Path, s: int, items: range, resolution: int) -> dict:
    name = _shard_name(s)
    tmp = out / f".{name}.tmp"
    offsets, sizes, crcs = [], [], []
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in items:
            data, ext = _encode(folder.path(i), resolution)
            offsets.append(_add(tar, f"{i:09d}.{ext}", data))
            sizes.append(len(data))
            crcs.append(zlib.crc32(data))
            _add(tar, f"{i:09d}.cls", str(folder.label(i)).encode())
    os.replace(tmp, out / name)
    digest = _sha256(out / name)
    return {"index": s, "name": name, "bytes": (out / name).stat().st_size, "sha256": digest, "count": len(items),
            "samples": {"offset": offsets, "size": sizes, "crc32": crcs}}  # fmt: skip


def _sha256(path: Path | str, fs=None) -> str:
    if fs is None:
        return sha256_file(path)
    h = hashlib.sha256()
    with fs.open(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _filesystem(root: str):
    """(fsspec filesystem or None for a local folder, the root path within it)."""
    if "://" not in root or root.startswith("file://"):
        return None, os.path.abspath(os.path.expanduser(root.removeprefix("file://")))
    try:
        import fsspec

        return fsspec.core.url_to_fs(root)
    except (ImportError, ValueError) as e:
        raise DataError(f"cannot open shards at {root}: {e} (install that filesystem's fsspec package)") from None


@register("dataset", "shards")
class ShardDataset(torch.utils.data.Dataset):
    """The images of ``genlab data pack`` shards, by index (see the module docstring)."""

    @dataclass
    class Config:
        root: str = ""  # the folder (or fsspec URL) holding manifest.json, index.safetensors and the shards
        resolution: int = 256  # the side trained on; must equal the packed resolution unless originals were packed
        hflip: bool = True  # random horizontal flip (the trainer decides per sample)

        def validate(self) -> None:
            if self.resolution < 8:
                raise ValueError(f"resolution must be >= 8, got {self.resolution}")

    @staticmethod
    def num_classes(cfg: Config) -> int:
        return len(_read_manifest(cfg.root)[0]["class_names"])

    def __init__(self, cfg: Config):
        self.cfg, self.hflip = cfg, cfg.hflip
        self.manifest, self.fs, self.root = _read_manifest(cfg.root)
        stored = self.manifest["resolution"]
        if stored not in (0, cfg.resolution):
            raise DataError(f"the shards in {cfg.root} hold {stored}x{stored} images; set data.resolution={stored} "
                            f"or pack again with --resolution {cfg.resolution}")  # fmt: skip
        self.class_names = list(self.manifest["class_names"])
        self.index = _read_index(self, len(self.manifest["shards"]))
        self._files: dict[int, object] = {}
        self._pid = os.getpid()

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def __len__(self) -> int:
        return int(self.manifest["num_samples"])

    def _shard(self, s: int):
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own files
            self._files, self._pid = {}, os.getpid()
        if s not in self._files:
            entry = self.manifest["shards"][s]
            path = f"{self.root}/{entry['name']}"
            opener = self.fs.open if self.fs is not None else open
            try:
                f = opener(path, "rb")
                size = f.seek(0, os.SEEK_END)
            except OSError as e:
                raise DataError(f"cannot open shard {path}: {e}") from None
            if size != entry["bytes"]:
                raise DataError(f"shard {path} has {size} bytes, its manifest says {entry['bytes']}: it is "
                                "truncated or was replaced; pack the folder again")  # fmt: skip
            self._files[s] = f
        return self._files[s]

    def read(self, i: int) -> bytes:
        """The stored bytes of sample ``i``, checked against its CRC-32."""
        s, offset, size, crc = (int(self.index[k][i]) for k in ("shard", "offset", "size", "crc32"))
        f = self._shard(s)
        f.seek(offset)
        data = f.read(size)
        if len(data) != size or zlib.crc32(data) != crc:
            raise DataError(f"shard {self.root}/{self.manifest['shards'][s]['name']} is corrupt: sample {i} "
                            "does not match its checksum; run `genlab data verify` and pack again")  # fmt: skip
        return data

    def __getitem__(self, item: int | tuple[int, bool]) -> dict[str, Tensor]:
        i, flip = item if isinstance(item, (tuple, list)) else (item, False)
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        try:
            with Image.open(io.BytesIO(self.read(i))) as img:
                img.load()
                img = center_crop(to_rgb(img), self.cfg.resolution)
        except DataError:
            raise
        except Exception as e:  # Pillow's errors for undecodable bytes
            raise DataError(f"shard {self.root}: sample {i} cannot be decoded ({e})") from None
        image = to_float(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
        if self.hflip and bool(flip):
            image = image.flip(-1)
        return {"image": image, "label": torch.tensor(int(self.index["label"][i]), dtype=torch.long)}


def _read_manifest(root: str):
    if not root:
        raise DataError("data.root is not set: the folder that `genlab data pack` wrote")
    fs, base = _filesystem(root)
    path = f"{base}/{MANIFEST}"
    missing = DataError(f"{root} holds no {MANIFEST}: pack a folder with `genlab data pack FOLDER --out {root}`")
    try:
        if fs is None:
            if not os.path.isfile(path):
                raise missing
            manifest = read_json_checked(path)
        else:
            with fs.open(path, "rb") as f:
                manifest = json.loads(f.read())
    except FileNotFoundError:
        raise missing from None
    except (OSError, ValueError, CorruptFileError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a genlab shard manifest ({FORMAT})")
    return manifest, fs, base


def _read_index(ds: ShardDataset, num_shards: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load as load_numpy

    path = f"{ds.root}/{INDEX}"
    try:
        with ds.fs.open(path, "rb") if ds.fs is not None else open(path, "rb") as f:
            index = load_numpy(f.read())
    except Exception as e:  # missing, truncated or not safetensors
        raise DataError(f"cannot read the shard index {path}: {e}") from None
    n = len(ds)
    want = ("shard", "offset", "size", "label", "crc32")
    if any(k not in index or index[k].shape != (n,) for k in want):
        raise DataError(f"the shard index {path} does not hold {n} entries of {', '.join(want)}")
    if n and (index["shard"].min() < 0 or index["shard"].max() >= num_shards or index["label"].min() < 0
              or index["label"].max() >= len(ds.class_names)):  # fmt: skip
        raise DataError(f"the shard index {path} names shards or labels its manifest does not have")
    return index


def verify(root: str, *, progress: bool = True) -> int:
    """Hash every shard against the manifest (DataError naming the first bad one); returns the shard count."""
    from tqdm.auto import tqdm

    manifest, fs, base = _read_manifest(root)
    for entry in tqdm(manifest["shards"], desc="verify", unit="shard", disable=not progress):
        path = f"{base}/{entry['name']}"
        try:
            digest = _sha256(Path(path) if fs is None else path, fs)
        except OSError as e:
            raise DataError(f"cannot read shard {path}: {e}") from None
        if digest != entry["sha256"]:
            raise DataError(f"shard {path} does not match its sha256 in {MANIFEST}: pack the folder again")
    return len(manifest["shards"])
