"""Evaluate an image source against a reference: the entry points ``genlab eval`` calls.

``dataset_reference`` computes (once) and caches a dataset's reference statistics;
``resolve_reference`` turns ``--ref`` (a statistics file, an ADM batch, a folder, an .npz, or a
dataset name) into a ``Reference``; ``evaluate`` streams the source through the feature network
and runs the registered evaluators.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from genlab import registry
from genlab.evals.base import EvalError, Features, Reference
from genlab.evals.features import extract, process_state
from genlab.evals.inception import COMPAT, POOL3_TS, FeatureNet
from genlab.evals.metrics import IS_UNAVAILABLE
from genlab.evals.reference import cached, dataset_key, file_key, is_stats_file, load_reference, save_reference
from genlab.evals.sources import DatasetImages, ImageSource, NpzImages, open_images

ALIASES = {"prc": "pr", "isc": "is", "precision": "pr", "recall": "pr"}
# networks whose pool3 features agree to ~1e-6 (the parity test): statistics from one serve the others
TF_INCEPTION_2015 = {COMPAT, POOL3_TS, "tf-inception-2015-12-05 (ADM)"}


def parse_metrics(text: str | list[str]) -> list[str]:
    items = [s.strip().lower() for s in text.split(",")] if isinstance(text, str) else list(text)
    out = []
    for item in items:
        name = ALIASES.get(item, item)
        if name not in registry.names("evaluator"):
            raise EvalError(f"unknown metric {item!r}; metrics: {', '.join(registry.names('evaluator'))}")
        if name not in out:
            out.append(name)
    if not out:
        raise EvalError("no metrics given (e.g. --metrics fid,kid,pr,is)")
    return out


@dataclass
class EvalResult:
    metrics: dict  # fid, kid_mean, kid_std, precision, recall, isc_mean, isc_std (those asked for)
    n: int
    feature_extractor: str  # the network and the weights file it came from
    reference: str
    notes: list[str] = field(default_factory=list)  # e.g. why IS is unavailable
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {**self.metrics, "feature_extractor": self.feature_extractor, "n": self.n}


# ----------------------------------------------------------------------------- references


def dataset_component(name: str, resolution: int, split: str, options: dict | None = None):
    """The checked dataset config (defaults filled in, so equal configs give equal cache keys)."""
    from genlab.config import ConfigError, component_from_dict

    data = {**(options or {}), "name": name, "resolution": resolution, "split": split}
    try:
        return component_from_dict("dataset", data, "dataset")
    except ConfigError as e:
        raise EvalError(str(e)) from None


def build_dataset(name: str, resolution: int, split: str, options: dict | None = None):
    return dataset_component(name, resolution, split, options).build()


def dataset_reference(
    name: str,
    resolution: int,
    net: FeatureNet,
    *,
    split: str = "train",
    n: int = 0,
    options: dict | None = None,
    batch_size: int = 64,
    progress: bool = True,
    refresh: bool = False,
) -> tuple[Reference, Path, bool]:
    """(reference, its cache file, whether it came from the cache); computed once per key."""
    from genlab.config import to_dict

    options = {k: v for k, v in (options or {}).items() if k not in ("name", "resolution", "split")}
    component = dataset_component(name, resolution, split, options)
    opts = {k: v for k, v in to_dict(component.cfg).items() if k not in ("resolution", "split")}
    path = cached(dataset_key(name, opts, resolution, split, n, net.name))
    if path.is_file() and not refresh:
        return load_reference(path), path, True
    dataset = component.build()
    source = DatasetImages(dataset, n, description=f"{name} {split} {resolution}px")
    _announce(source, path, progress)
    feats = extract(source, net, batch_size=batch_size, desc=f"reference {name}/{split}", progress=progress)
    meta = {"dataset": name, "resolution": resolution, "split": split, "options": opts, "source": source.description}
    ref = Reference.from_features(feats, meta)
    if _is_main():
        save_reference(ref, path)
    return ref, path, False


def resolve_reference(
    spec: str,
    net: FeatureNet,
    *,
    resolution: int,
    need_features: bool,
    batch_size: int = 64,
    progress: bool = True,
) -> Reference:
    """``--ref``: a statistics file, an ADM batch, an image folder, an .npz of images, or ``DATASET[:SPLIT]``."""
    path = Path(spec)
    if path.exists():
        if path.is_file() and path.suffix == ".npz" and is_stats_file(path):
            ref = load_reference(path)
            if ref.features is None and need_features:
                if not ref.meta.get("adm_images"):
                    raise EvalError(
                        f"{path} holds only mu and sigma; KID and precision/recall need a reference with features"
                    )
                hit = cached(file_key(path, net.name))
                if hit.is_file():
                    ref.features = load_reference(hit).features
                else:
                    ref.features = _cached_features(path, NpzImages(path), net, batch_size, progress).features
            return ref
        key = file_key(path, net.name)
        hit = cached(key)
        if hit.is_file():
            return load_reference(hit)
        source = open_images(path)
        return _cached_features(path, source, net, batch_size, progress)
    name, _, split = spec.partition(":")
    if name in registry.names("dataset"):
        return dataset_reference(
            name, resolution, net, split=split or "train", batch_size=batch_size, progress=progress
        )[0]
    raise EvalError(
        f"reference {spec} does not exist; give a statistics file, an image folder or .npz, or compute one with "
        f"`genlab eval ref --dataset NAME --resolution {resolution}` (datasets: {', '.join(registry.names('dataset'))})"
    )


def precheck_reference(spec: str | None, *, resolution: int, source: str) -> None:
    """The cheap checks of ``--ref`` (it exists, it is not empty, its resolution matches), before any network runs."""
    if spec is None:
        return
    path = Path(spec)
    if path.exists():
        if path.is_file() and path.suffix == ".npz" and is_stats_file(path):
            res = load_reference(path).meta.get("resolution")
        else:
            res = open_images(path).resolution
        if res is not None and int(res) != int(resolution):
            raise EvalError(
                f"mismatched resolutions: {source} is {resolution}x{resolution} but the reference {spec} is {res}x{res}"
            )
        return
    if spec.partition(":")[0] not in registry.names("dataset"):
        raise EvalError(
            f"reference {spec} does not exist; give a statistics file, an image folder or .npz, or compute one with "
            f"`genlab eval ref --dataset NAME --resolution {resolution}` (datasets: {', '.join(registry.names('dataset'))})"
        )


def _cached_features(path: Path, source: ImageSource, net: FeatureNet, batch_size: int, progress: bool) -> Reference:
    _announce(source, cached(file_key(path, net.name)), progress)
    feats = extract(source, net, batch_size=batch_size, desc=f"reference {path.name}", progress=progress)
    ref = Reference.from_features(feats, {"resolution": source.resolution, "source": str(path)})
    if _is_main():
        save_reference(ref, cached(file_key(path, net.name)))
    return ref


def check_reference(ref: Reference, *, resolution: int, net: FeatureNet, source: str) -> None:
    """Refuse to compare images with a reference of another resolution or another feature network."""
    ref_res = ref.meta.get("resolution")
    if ref_res is not None and int(ref_res) != int(resolution):
        raise EvalError(
            f"mismatched resolutions: {source} is {resolution}x{resolution} but the reference is {ref_res}x{ref_res}; "
            f"compute a reference at {resolution} (genlab eval ref --dataset NAME --resolution {resolution})"
        )
    if ref.feature_net != net.name and not {ref.feature_net, net.name} <= TF_INCEPTION_2015:
        raise EvalError(f"the reference was computed with {ref.feature_net}, these images with {net.name}")


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    source: ImageSource,
    ref: Reference | None,
    net: FeatureNet,
    metrics: list[str],
    *,
    batch_size: int = 64,
    progress: bool = True,
    reference_name: str = "",
) -> EvalResult:
    t0 = time.perf_counter()
    evaluators = {name: registry.get("evaluator", name)() for name in metrics}
    if ref is None and any(e.needs_reference for e in evaluators.values()):
        raise EvalError(f"{', '.join(n for n, e in evaluators.items() if e.needs_reference)} need a reference (--ref)")
    if ref is not None:
        check_reference(ref, resolution=source.resolution, net=net, source=source.description)
    feats: Features = extract(source, net, batch_size=batch_size, desc="features", progress=progress)
    out: dict = {}
    notes = []
    for name, ev in evaluators.items():
        out.update(ev(feats, ref))
        if name == "is" and feats.logits is None:
            notes.append(IS_UNAVAILABLE)
    return EvalResult(out, feats.n, net.description, reference_name, notes, time.perf_counter() - t0)


def _announce(source: ImageSource, cache_file: Path, progress: bool) -> None:
    """One line before the long, silent-looking part: featurising a reference (~6 images/s per CPU core)."""
    if progress and _is_main():
        print(f"genlab eval: computing reference statistics of {source.description} ({source.n:,} images; once, "
              f"then read from {cache_file})", file=sys.stderr, flush=True)  # fmt: skip


def _is_main() -> bool:
    return process_state().is_main_process


def format_table(result: EvalResult) -> str:
    rows = [(k, "unavailable" if v is None else f"{v:.6g}") for k, v in result.metrics.items()]
    rows += [("n", str(result.n)), ("feature network", result.feature_extractor)]
    if result.reference:
        rows.append(("reference", result.reference))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines + [f"note: {n}" for n in result.notes])
