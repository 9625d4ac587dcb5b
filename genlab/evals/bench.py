"""Evaluation-speed benchmark: genlab's evaluator against torch-fidelity's ``calculate_metrics``.

Both compute FID, KID and precision/recall of the same generated uint8 images against the same
dataset split, with the same feature extractor (the one ``inception.resolve`` finds), on one
process. Each side is called twice: torch-fidelity recomputes both inputs' features every time
(its cache is off, as it is for any input without ``input2_cache_name``); genlab computes the
reference once into a fresh cache directory and reads it on the second call. genlab also runs the
network with channels-last convolutions (``FeatureNet.to``); torch-fidelity builds its own
extractor instance as it always does. Reported: images/s (generated images per second of wall
time) per call, the ratio genlab / torch-fidelity, and both sides' metric values.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

import torch
from torch import Tensor

from genlab.evals.evaluate import build_dataset, dataset_reference, evaluate
from genlab.evals.inception import resolve
from genlab.evals.sources import DatasetImages, ImageSource


class _Images(ImageSource):
    def __init__(self, images: Tensor):
        self.images, self.n, self.resolution, self.description = images, len(images), images.shape[-1], "bench"

    def batch(self, start: int, stop: int) -> Tensor:
        return self.images[start:stop]


class _U8Dataset(torch.utils.data.Dataset):
    """What torch-fidelity takes: a Dataset of uint8 (3, H, W) tensors."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def bench_eval(images: Tensor, *, dataset: str = "openmoji", resolution: int = 32, split: str = "val",
               device: str | None = None, batch_size: int = 64, calls: int = 2) -> dict:  # fmt: skip
    from torch_fidelity import calculate_metrics

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net = resolve(device=device)
    real = DatasetImages(build_dataset(dataset, resolution, split)).batch(0, 10**9)  # (M, 3, H, W) uint8
    subset = min(1000, len(images), len(real))
    results = []
    old_cache = os.environ.get("GENLAB_EVAL_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GENLAB_EVAL_CACHE"] = cache  # a cold reference cache for the first call
        try:
            for call in range(1, calls + 1):
                t0 = time.perf_counter()
                ref, _, hit = dataset_reference(
                    dataset, resolution, net, split=split, batch_size=batch_size, progress=False
                )
                ours = evaluate(_Images(images), ref, net, ["fid", "kid", "pr"], batch_size=batch_size, progress=False)
                t_genlab = time.perf_counter() - t0
                t0 = time.perf_counter()
                theirs = calculate_metrics(
                    input1=_U8Dataset(images), input2=_U8Dataset(real), cuda=device.type == "cuda",
                    batch_size=batch_size, fid=True, kid=True, prc=True, feature_extractor=net.name,
                    feature_extractor_weights_path=net.source if os.path.isfile(net.source) else None,
                    kid_subset_size=subset, cache=False, verbose=False,
                )  # fmt: skip
                t_tf = time.perf_counter() - t0
                results.append({
                    "call": call,
                    "genlab_reference_cached": hit,
                    "genlab_s": t_genlab, "torch_fidelity_s": t_tf,
                    "genlab_img_s": len(images) / t_genlab, "torch_fidelity_img_s": len(images) / t_tf,
                    "ratio": t_tf / t_genlab,
                    "fid": {"genlab": ours.metrics["fid"], "torch_fidelity": theirs["frechet_inception_distance"]},
                    "kid_mean": {"genlab": ours.metrics["kid_mean"], "torch_fidelity": theirs["kernel_inception_distance_mean"]},
                    "precision": {"genlab": ours.metrics["precision"], "torch_fidelity": theirs["precision"]},
                    "recall": {"genlab": ours.metrics["recall"], "torch_fidelity": theirs["recall"]},
                })  # fmt: skip
        finally:
            if old_cache is None:
                os.environ.pop("GENLAB_EVAL_CACHE", None)
            else:
                os.environ["GENLAB_EVAL_CACHE"] = old_cache
    return {
        "what": "genlab eval vs torch_fidelity.calculate_metrics (fid, kid, prc), same images, same extractor",
        "generated_images": len(images),
        "reference": f"{dataset} {split} {resolution}px ({len(real)} images)",
        "feature_extractor": net.description,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "calls": results,
    }
