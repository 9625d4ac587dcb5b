"""Token caches: a dataset encoded once by a tokenizer, so a generator trains without the tokenizer in the loop.

On disk (``genlab cache`` writes it, the ``token-cache`` dataset reads it)::

    DIR/manifest.json                 count, tokenizer (name, config, fingerprint), dataset, resolution, token spec,
                                      class names, shards with their sha256, and one checksum over all of them
    DIR/shard_00000.safetensors       "label" (n,), "tokens" (n, ...) or "tokens.0", "tokens.1", ... for a list of
                                      token maps (multi-scale), "lengths" (n,) int32 when the tokenizer gives
                                      per-sample lengths (a ``TokenBatch``: FlexTok's prefixes), and the same under
                                      "flip." when both flips are cached

A batch read from a cache with lengths has a ``"lengths"`` (B,) int64 entry beside ``"tokens"``; caches without
them (every tokenizer of round 2) are written and read exactly as before.

Shards are written whole (a temporary file, then a rename), and ``manifest.partial.json`` records what is being
written, so an interrupted ``genlab cache`` resumes at the first missing shard and refuses a directory that holds
another tokenizer's or dataset's shards. Reading maps the shards (``numpy.memmap``): a cache larger than memory
trains without being loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from genlab.data.base import DataError, batch_by_index
from genlab.registry import register
from genlab.safeio import CorruptFileError, read_json_checked, safetensors_header

MANIFEST, PARTIAL = "manifest.json", "manifest.partial.json"
FORMAT = 1
# safetensors dtype names -> numpy dtype of the stored bytes (bfloat16 is read as uint16 and viewed)
_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32,
       "I16": np.int16, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip


INT_KINDS = ("I64", "I32")  # what `genlab cache` writes for ids and labels (int32 on disk)
FLOAT_KINDS = ("F32", "F16", "BF16", "F64")  # continuous tokens (`genlab cache --dtype`)


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing


def _flatten(tokens: Any, prefix: str) -> dict[str, Tensor]:
    """Tokens of a batch as named tensors: a tensor -> ``prefix``; a list of maps -> ``prefix.0``, ``prefix.1``..."""
    if isinstance(tokens, (list, tuple)):
        return {f"{prefix}.{k}": _stored(t) for k, t in enumerate(tokens)}
    return {prefix: _stored(tokens)}


def _encoded(enc: Any, prefix: str) -> dict[str, Tensor]:
    """What ``encode`` returned as named tensors: tokens, or a TokenBatch-like ``.tokens`` with ``.lengths``."""
    tokens, lengths = getattr(enc, "tokens", enc), getattr(enc, "lengths", None)
    named = _flatten(tokens, f"{prefix}tokens")
    if lengths is not None:
        named[f"{prefix}lengths"] = _stored(lengths.long())
    return named


def _stored(t: Tensor) -> Tensor:
    t = t.detach().cpu()
    return t.to(torch.int32) if t.dtype == torch.long else t  # ids fit in int32: half the disk


def write_token_cache(
    encode: Callable[[Tensor], Any],
    dataset,
    out: Path | str,
    *,
    meta: dict,
    flips: bool = False,
    shard_size: int = 4096,
    batch_size: int = 64,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> dict:
    """Encode every image of ``dataset`` (in index order) into ``out``; returns the manifest.

    ``meta`` describes what made the cache (``tokenizer``, ``dataset``, ``resolution``, ``token_spec``): a directory
    whose partial manifest says otherwise is refused rather than mixed. ``dtype`` stores continuous tokens in
    another float type (e.g. bfloat16). Interrupted runs resume from the first missing shard."""
    out = Path(out)
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset is empty: nothing to cache")
    if shard_size <= 0 or batch_size <= 0:
        raise DataError("shard_size and batch_size must be positive")
    plan = {
        "format": FORMAT, **meta, "count": n, "flips": flips, "shard_size": shard_size,
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "native",
        "class_names": list(dataset.class_names),
    }  # fmt: skip
    _claim(out, plan)

    def make(idx: Tensor) -> dict[str, Tensor]:
        batch = batch_by_index(dataset, idx)
        x = batch["image"].to(device)
        named = {"label": batch["label"].long(), **_encoded(encode(x), "")}
        if flips:
            named |= _encoded(encode(x.flip(-1)), "flip.")
        return named

    return write_shards(out, plan, make, shard_size=shard_size, batch_size=batch_size, dtype=dtype, desc="cache")


def write_shards(
    out: Path, plan: dict, make: Callable[[Tensor], dict[str, Tensor]], *, shard_size: int, batch_size: int,
    dtype: torch.dtype | None = None, desc: str = "cache", unit: str = "img",
) -> dict:  # fmt: skip
    """Fill the claimed directory ``out`` with ``plan["count"]`` rows in shards: ``make(indices)`` returns the
    named CPU tensors of rows ``indices`` (a "label" among them). Shards already there are kept (resume); the manifest
    (``plan`` + each shard's sha256 + one checksum) is written last. Token caches and reflow's pair datasets
    (``genlab.data.pairs``) are both written here."""
    n = plan["count"]
    shards = (n + shard_size - 1) // shard_size
    done = sum(min(shard_size, n - i * shard_size) for i in range(shards) if (out / shard_name(i)).is_file())
    bar = tqdm(total=n, initial=done, desc=desc, unit=unit, dynamic_ncols=True)
    for i in range(shards):
        path = out / shard_name(i)
        if path.is_file():
            continue
        lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
        parts: dict[str, list[Tensor]] = {}
        for start in range(lo, hi, batch_size):
            idx = torch.arange(start, min(hi, start + batch_size))
            for k, v in make(idx).items():
                if dtype is not None and v.is_floating_point():
                    v = v.to(dtype)
                parts.setdefault(k, []).append(v)
            bar.update(len(idx))
        tmp = out / f".tmp-{path.name}"
        save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # a shard is there whole or not at all
    bar.close()
    files = [shard_name(i) for i in range(shards)]
    entries = [{"file": f, "count": min(shard_size, n - i * shard_size), "sha256": _sha256(out / f)}
               for i, f in enumerate(files)]  # fmt: skip
    manifest = {**plan, "shards": entries, "checksum": hashlib.sha256("".join(e["sha256"] for e in entries).encode())
                .hexdigest()}  # fmt: skip
    tmp = out / f".tmp-{MANIFEST}"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / MANIFEST)
    (out / PARTIAL).unlink(missing_ok=True)
    return manifest


def _claim(out: Path, plan: dict) -> None:
    """Mark ``out`` as being filled with ``plan``; refuse a directory holding a different cache."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (MANIFEST, PARTIAL):
        f = out / name
        if not f.is_file():
            continue
        old = json.loads(f.read_text())
        old = {k: v for k, v in old.items() if k in plan}
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise DataError(
                f"{out} already holds a token cache made differently (it differs in: {', '.join(diff)}); "
                "choose another --out or delete that directory"
            )
    if (out / MANIFEST).is_file():
        (out / MANIFEST).unlink()  # rewritten (with fresh checksums) once every shard is there
    (out / PARTIAL).write_text(json.dumps(plan, indent=2))
    for stale in out.glob(".tmp-*"):
        stale.unlink()  # a shard whose writing was interrupted


# ----------------------------------------------------------------------------- reading


MAX_COUNT = 2**40  # more samples than any cache holds: a manifest saying more is crafted or corrupt


def read_manifest(path: Path | str) -> dict:
    """The manifest of the cache in ``path``, its structure checked: every shard a plain file name inside ``path``
    with a count and a sha256, counts that add up (a ``DataError`` naming the file otherwise)."""
    path = Path(path)
    f = path / MANIFEST
    if not f.is_file():
        partial = " (an interrupted `genlab cache` left it unfinished: run the same command again)" if (
            path / PARTIAL
        ).is_file() else ""  # fmt: skip
        raise DataError(f"no token cache at {path}: {f} is missing{partial}; make one with `genlab cache`")
    try:
        manifest = read_json_checked(f)
    except CorruptFileError as e:
        raise DataError(f"{e}; make the cache again with `genlab cache`") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{f}: unknown token cache format {manifest.get('format')!r} (this genlab reads {FORMAT})")
    shards, count = manifest.get("shards"), manifest.get("count")
    if not _count_ok(count) or not isinstance(shards, list) or not shards:
        raise DataError(f"{f}: no valid count and shard list; make the cache again with `genlab cache`")
    for i, e in enumerate(shards):
        name = e.get("file") if isinstance(e, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..") or not name.endswith(
            ".safetensors"
        ):  # fmt: skip
            raise DataError(f"{f}: shard {i} names {name!r}, not a .safetensors file inside {path}")
        if not _count_ok(e.get("count")) or not isinstance(e.get("sha256"), str):
            raise DataError(f"{f}: shard {name} has no valid count and sha256")
    if sum(e["count"] for e in shards) != count:
        raise DataError(f"{f}: shard counts add up to {sum(e['count'] for e in shards)}, the manifest says {count}")
    if not isinstance(manifest.get("class_names"), list) or not _count_ok(manifest.get("resolution")):
        raise DataError(f"{f}: no valid class_names and resolution")
    return manifest


def _count_ok(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT


class _Shard:
    """The tensors of one safetensors file as read-only memory maps, checked against the file (dtype, shape, offsets,
    ``rows`` rows each) and, before the first read, against the sha256 the manifest recorded."""

    def __init__(self, path: Path, rows: int, sha256: str):
        self.path, self.rows, self.sha256, self.verified = path, rows, sha256, False
        try:
            header = safetensors_header(path)
        except CorruptFileError as e:
            raise DataError(f"token cache shard {e}; make the cache again with `genlab cache`") from None
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
        header.pop("__metadata__", None)
        self.tensors: dict[str, tuple[np.ndarray, str]] = {}
        for name, info in header.items():
            kind, shape = info.get("dtype"), info.get("shape")
            if kind not in _NP:
                raise DataError(f"{path}: tensor {name!r} has dtype {kind!r}; a token cache holds {', '.join(_NP)}")
            if not (isinstance(shape, list) and all(isinstance(d, int) and 0 <= d <= MAX_COUNT for d in shape)):
                raise DataError(f"{path}: tensor {name!r} has no valid shape")
            if not shape or shape[0] != rows:
                raise DataError(
                    f"{path}: tensor {name!r} has {shape[0] if shape else 0} rows, the manifest says {rows}"
                )
            begin, end = info["data_offsets"]
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if end - begin != count * np.dtype(_NP[kind]).itemsize:
                raise DataError(f"{path}: tensor {name!r} takes {end - begin} bytes, its shape needs another size")
            if count == 0:
                arr = np.zeros(shape, dtype=_NP[kind])
            else:
                arr = np.memmap(path, dtype=_NP[kind], mode="r", offset=8 + size + begin, shape=tuple(shape))
            self.tensors[name] = (arr, kind)
        if "label" not in self.tensors:
            raise DataError(f"{path}: no 'label' tensor; make the cache again with `genlab cache`")

    def verify(self) -> None:
        if not self.verified:
            if _sha256(self.path) != self.sha256:
                raise DataError(
                    f"{self.path}: its checksum differs from the one in the manifest (changed or corrupt since "
                    "`genlab cache` wrote it); make the cache again"
                )
            self.verified = True

    def check(self, name: str, kinds: tuple[str, ...], shape: tuple[int, ...], high: int | None) -> None:
        """DataError unless tensor ``name`` has a dtype in ``kinds``, per-row ``shape`` and values in [0, high)
        (ids), or finite values (``high`` None: continuous tokens). Read in blocks of rows: memory stays small."""
        self.verify()
        if name not in self.tensors:
            raise DataError(f"{self.path}: no tensor {name!r}; this run's tokens need it (make the cache again)")
        arr, kind = self.tensors[name]
        if kind not in kinds:
            raise DataError(f"{self.path}: tensor {name!r} is {kind}; this run's tokens need {' or '.join(kinds)}")
        if tuple(arr.shape[1:]) != tuple(shape):
            raise DataError(f"{self.path}: tensor {name!r} has rows of shape {list(arr.shape[1:])}, this run's "
                            f"tokens are {list(shape)}")  # fmt: skip
        step = max(1, (1 << 22) // max(1, int(np.prod(shape))))
        for lo in range(0, arr.shape[0], step):
            block = np.asarray(arr[lo : lo + step])
            if kind == "BF16":
                block = torch.from_numpy(block.copy()).view(torch.bfloat16).float().numpy()
            if high is None:
                if not np.isfinite(block).all():
                    raise DataError(f"{self.path}: tensor {name!r} holds NaN or infinite values")
            elif block.size and (block.min() < 0 or block.max() >= high):
                raise DataError(f"{self.path}: tensor {name!r} holds ids {block.min()}..{block.max()}, outside "
                                f"0..{high - 1}")  # fmt: skip

    def take(self, name: str, rows: np.ndarray) -> Tensor:
        self.verify()
        if name not in self.tensors:
            raise DataError(f"{self.path}: no tensor {name!r} (every shard of a cache holds the same ones)")
        arr, kind = self.tensors[name]
        t = torch.from_numpy(np.ascontiguousarray(arr[rows]))
        if kind == "BF16":
            return t.view(torch.bfloat16)
        return t.long() if kind in ("I64", "I32", "I16", "U8") else t


@register("dataset", "token-cache")
class TokenCacheDataset(torch.utils.data.Dataset):
    """The samples of a token cache: ``{"tokens": ..., "label": ...}`` (``tokens`` a list for multi-scale caches).

    With a cache of both flips, a sample's flip decision picks the flipped image's tokens (the trainer draws it from
    the sample's seed, as for images)."""

    @dataclass
    class Config:
        path: str = ""  # the directory `genlab cache` wrote
        resolution: int = 0  # image side of the cached dataset (0: read from the manifest)
        classes: int = 0  # number of classes (0: read from the manifest)
        flips: bool = True  # use the flipped images' tokens when the cache has them

        def validate(self) -> None:
            if not self.path:
                raise ValueError("path: name the directory written by `genlab cache`")
            if self.resolution == 0 or self.classes == 0:  # filled in once, then kept in the run's config.yaml
                try:
                    m = read_manifest(self.path)
                except DataError as e:
                    raise ValueError(str(e)) from None
                self.resolution = self.resolution or int(m["resolution"])
                self.classes = self.classes or len(m["class_names"])

    @staticmethod
    def num_classes(cfg: Config) -> int:
        return cfg.classes

    def __init__(self, cfg: Config):
        self.cfg, self.root = cfg, Path(cfg.path)
        self.manifest = m = read_manifest(self.root)
        self.class_names = list(m["class_names"])
        for key, have in (("resolution", int(m["resolution"])), ("classes", len(self.class_names))):
            if getattr(cfg, key) not in (0, have):  # 0: whatever the manifest says
                raise DataError(f"data.{key}={getattr(cfg, key)} but the cache in {self.root} has {key} {have}")
        for e in m["shards"]:
            f = self.root / e["file"]
            if not f.is_file() or f.resolve().parent != self.root.resolve():
                raise DataError(f"{f}: missing, not a regular file, or a link out of {self.root}; make the cache again")
        self.shards = [_Shard(self.root / e["file"], e["count"], e["sha256"]) for e in m["shards"]]
        counts = [e["count"] for e in m["shards"]]
        self.starts = np.cumsum([0, *counts])
        names = set(self.shards[0].tensors)
        self.keys = sorted((k for k in names if k.startswith("tokens")), key=_key_order)
        self.has_lengths = "lengths" in names
        self.use_flips = cfg.flips and bool(m.get("flips"))
        for shard in self.shards:  # the null class (id = number of classes) is never a sample's label
            shard.check("label", INT_KINDS, (), len(self.class_names))
        self.labels = torch.cat([s.take("label", np.arange(c)) for s, c in zip(self.shards, counts)])

    def check_tokens(self, spec) -> None:
        """DataError naming the file unless every shard holds exactly the tensors a ``spec`` (TokenSpec) run reads,
        with its dtype, per-sample shape and value range (ids 0 .. vocab_size - 1, finite latents), and the manifest
        records that spec. Reads every shard once; called before training reads any sample."""
        f = self.root / MANIFEST
        saved = self.manifest.get("token_spec")
        if not isinstance(saved, dict):
            raise DataError(f"{f}: no token_spec; make the cache again with `genlab cache`")
        mine = {"kind": spec.kind, "shape": list(spec.shape), "vocab_size": spec.vocab_size,
                "scales": list(spec.scales)}  # fmt: skip
        differ = [k for k, v in mine.items() if k in saved and saved[k] != v]  # the shards are checked below
        if differ:
            raise DataError(f"{f}: its tokens ({', '.join(f'{k} {saved.get(k)}' for k in differ)}) are not this "
                            f"run's ({', '.join(f'{k} {mine[k]}' for k in differ)})")  # fmt: skip
        if spec.kind == "multiscale":
            expected = {f"tokens.{k}": (s, s) for k, s in enumerate(spec.scales)}
        else:
            expected = {"tokens": tuple(spec.shape)}
        if self.manifest.get("flips"):
            expected |= {f"flip.{k}": v for k, v in expected.items()}
        kinds, high = (FLOAT_KINDS, None) if spec.kind == "continuous" else (INT_KINDS, spec.vocab_size)
        for shard in self.shards:
            extra = sorted(set(shard.tensors) - set(expected) - {"label"})
            if extra:
                raise DataError(f"{shard.path}: tensors {extra} are not tokens of this run ({spec.describe()})")
            for name, shape in expected.items():
                shard.check(name, kinds, shape, high)

    @property
    def tokenizer(self) -> dict:
        return self.manifest["tokenizer"]

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def _gather(self, key: str, idx: np.ndarray) -> Tensor:
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out = None
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            part = self.shards[s].take(key, idx[sel] - self.starts[s])
            if out is None:
                out = part.new_empty((len(idx), *part.shape[1:]))
            out[torch.from_numpy(sel)] = part
        return out

    def get_batch(self, idx: Tensor, flip: Tensor | None = None) -> dict[str, Any]:
        i = idx.cpu().numpy().astype(np.int64)
        if i.size and (i.min() < 0 or i.max() >= len(self)):
            raise IndexError(f"token cache index out of range 0..{len(self) - 1}")
        tokens = []
        for key in self.keys:
            t = self._take(key, i, flip)
            tokens.append(t.float() if t.is_floating_point() else t)
        out = {"tokens": tokens if self.keys != ["tokens"] else tokens[0], "label": self.labels[idx.cpu()]}
        if self.has_lengths:
            out["lengths"] = self._take("lengths", i, flip).long()
        return out

    def _take(self, key: str, i: np.ndarray, flip: Tensor | None) -> Tensor:
        """Rows ``i`` of ``key``, the flipped image's where ``flip`` says so (and the cache has flips)."""
        t = self._gather(key, i)
        if self.use_flips and flip is not None and bool(flip.any()):
            f = self._gather(f"flip.{key}", i)
            t = torch.where(flip.view(-1, *([1] * (t.ndim - 1))), f, t)
        return t

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.get_batch(torch.tensor([i]))
        tokens = [t[0] for t in b["tokens"]] if isinstance(b["tokens"], list) else b["tokens"][0]
        return {"tokens": tokens, "label": b["label"][0]} | ({"lengths": b["lengths"][0]} if "lengths" in b else {})


def _key_order(key: str) -> tuple[int, int]:
    """ "tokens" first, then "tokens.0", "tokens.1", ... in numeric order."""
    _, _, k = key.partition(".")
    return (0, -1) if not k else (1, int(k))


def training_images(data) -> tuple[str, dict, str]:
    """(dataset name, options, split) of the images a run's ``data`` component trains on: a token cache names the
    images it encoded (from its manifest), so FID compares a cache-trained run with those images."""
    from genlab.config import to_dict

    if data.name != "token-cache":
        return data.name, to_dict(data.cfg), "train"
    options = dict(read_manifest(data.cfg.path)["dataset"])
    name = options.pop("name")
    return name, options, str(options.get("split", "train"))
