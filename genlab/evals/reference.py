"""Reference statistics: genlab's own statistics files, ADM reference batches, and a cache.

A genlab statistics file is an ``.npz`` (read with ``allow_pickle=False``) holding ``mu`` (D,) and
``sigma`` (D, D) in float64, ``features`` (M, D) float32 for KID and precision/recall, ``n``, and
``meta`` (JSON: feature network, dataset, resolution, split, source) under the marker key
``genlab_stats``. Upstream torch-fidelity cannot read precomputed statistics, so genlab writes and
reads these itself.

An ADM reference batch (guided-diffusion's ``evaluations/``, e.g. ``VIRTUAL_imagenet256_labeled.npz``)
holds ``mu``/``sigma`` of the same pool3 features computed by the TF graph, and ``arr_0``, 10k
images, for precision/recall; its ``mu``/``sigma`` are used as given, so FID is comparable with
the DiT/VAR/TiTok tables. Its images are featurised only when KID or precision/recall is asked for.

Dataset references are cached once per (dataset, its config, resolution, split, n, feature
network) under ``cache_dir()/evals/refs/``; image folders and .npz files used as references are
cached by their path, size and modification time, so features are never computed twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from genlab.data.base import cache_dir, stable_key
from genlab.evals.base import EvalError, Reference

FORMAT = "genlab-stats-v1"


def refs_dir() -> Path:
    """``GENLAB_EVAL_CACHE`` when set, else ``cache_dir()/evals/refs``."""
    return Path(os.environ.get("GENLAB_EVAL_CACHE") or cache_dir() / "evals" / "refs")


def save_reference(ref: Reference, path: Path | str) -> Path:
    """Write ``ref`` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**ref.meta, "feature_net": ref.feature_net, "n": ref.n, "format": FORMAT}
    arrays = {
        "genlab_stats": np.array(FORMAT),
        "mu": ref.mu.astype(np.float64),
        "sigma": ref.sigma.astype(np.float64),
        "n": np.array(ref.n),
        "meta": np.array(json.dumps(meta)),
    }
    if ref.features is not None:
        arrays["features"] = ref.features.astype(np.float32)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def is_stats_file(path: Path | str) -> bool:
    """A genlab statistics file or an ADM reference batch (both carry mu and sigma)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "mu" in data.files and "sigma" in data.files
    except (OSError, ValueError):
        return False


def load_reference(path: Path | str) -> Reference:
    """A genlab statistics file or an ADM reference batch (whose images stay unfeaturised here)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"reference {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EvalError(f"reference {path} is not a readable .npz: {e}") from None
    with data:
        if "mu" not in data.files or "sigma" not in data.files:
            raise EvalError(f"{path} holds no statistics (mu, sigma); keys: {', '.join(data.files)}")
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise EvalError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
        if "genlab_stats" in data.files:
            meta = json.loads(str(data["meta"]))
            features = data["features"] if "features" in data.files else None
            return Reference(mu, sigma, int(data["n"]), meta.pop("feature_net"), features, meta)
        # an ADM reference batch: the TF graph's pool3 statistics; images (arr_0) for precision/recall
        meta = {"source": str(path), "adm": True}
        if "arr_0" in data.files:
            from genlab.evals.sources import npz_member

            shape = npz_member(path, "arr_0").shape  # (N, H, W, 3), without reading the images
            meta["resolution"], meta["adm_images"] = int(shape[1]), int(shape[0])
        return Reference(mu, sigma, int(meta.get("adm_images", 0)), "tf-inception-2015-12-05 (ADM)", None, meta)


def dataset_key(name: str, options: dict, resolution: int, split: str, n: int, feature_net: str) -> str:
    opts = {k: v for k, v in sorted(options.items()) if k not in ("resolution", "split")}
    return f"{name}-{resolution}px-{split}-n{n or 'all'}-{feature_net}-{stable_key(opts)}"


def file_key(path: Path | str, feature_net: str) -> str:
    """A cache key for a folder or .npz used as a reference: its path, sizes and modification times."""
    path = Path(path).resolve()
    if path.is_dir():
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()]
    else:
        st = path.stat()
        stats = [(str(path), st.st_size, st.st_mtime_ns)]
    return f"{path.name}-{feature_net}-{stable_key(stats)}"


def cached(key: str) -> Path:
    return refs_dir() / f"{key}.npz"
