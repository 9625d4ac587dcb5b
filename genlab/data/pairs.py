"""Reflow's pair datasets: noise-sample pairs (Z_0, Z_1 = ODE(Z_0)) of a frozen flow run (Liu et al. 2022).

Written by ``genlab reflow --run TEACHER --n N --out PAIRS`` (or by the reflow and SlimFlow tasks when no pair
dataset is given) through the token cache's machinery (``genlab.data.cache.write_shards``): sharded safetensors,
a manifest with every shard's sha256, resumable at the first missing shard, a progress bar. Each shard holds
``label`` (n,), ``noise`` (n, *spec) and ``tokens`` (n, *spec): pair i is class ``i % classes``, seed
``seed + i``, its noise the per-sample noise of that seed (the flow objective's stream), its tokens the teacher's
sample from exactly that noise. ``PairDataset`` reads them (a token cache with a second tensor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.data.base import DataError
from genlab.data.cache import FORMAT, TokenCacheDataset, _claim, read_manifest, write_shards
from genlab.nn import per_sample_randn

KIND = "reflow-pairs"
NOISE_STREAM = 0  # the flow objective's noise stream: sample() integrates from exactly this noise


def write_pairs(
    pipe, out: Path | str, *, n: int, options: Any, teacher: dict, seed: int = 0, shard_size: int = 4096,
    batch_size: int = 64, device: torch.device | str = "cpu",
) -> dict:  # fmt: skip
    """Sample ``n`` pairs from the flow run ``pipe`` (a ``Pipeline``) with its SampleOptions ``options``; returns
    the manifest. ``teacher`` ({"path", "sha256"}) is recorded; a directory holding pairs made differently (another
    teacher, sampler, count or seed) is refused rather than mixed."""
    out = Path(out)
    if n <= 0 or shard_size <= 0 or batch_size <= 0:
        raise DataError("--n, the shard size and the batch size must be positive")
    from genlab.config import to_dict

    spec, names = pipe.tokenizer.token_spec, list(pipe.class_names)
    plan = {
        "format": FORMAT, "kind": KIND, "teacher": teacher, "sampling": to_dict(options), "seed": seed,
        "count": n, "flips": False, "shard_size": shard_size, "dtype": "native", "class_names": names,
        "resolution": int(pipe.cfg.data.cfg.resolution),
        "token_spec": {"kind": spec.kind, "shape": list(spec.shape)},
        "tokenizer": {"name": pipe.cfg.tokenizer.name, "fingerprint": teacher.get("sha256", "")},
    }  # fmt: skip
    _claim(out, plan)
    gen = pipe.generator

    def make(idx: Tensor) -> dict[str, Tensor]:
        seeds, labels = seed + idx, idx % len(names)
        noise = per_sample_randn(seeds, tuple(spec.shape), stream=NOISE_STREAM, device=device)
        with torch.no_grad():
            tokens = gen.sample(labels.to(device), seeds, options).tokens
        return {"label": labels, "noise": noise.cpu(), "tokens": tokens.float().cpu()}

    return write_shards(out, plan, make, shard_size=shard_size, batch_size=batch_size, desc="reflow", unit="pair")


class PairDataset(TokenCacheDataset):
    """The pairs of ``genlab reflow``: ``{"tokens": Z_1 (the teacher's sample), "noise": Z_0, "label"}``."""

    def __init__(self, path: Path | str):
        manifest = read_manifest(path)
        if manifest.get("kind") != KIND:
            raise DataError(f"{path} is not a reflow pair dataset (make one with `genlab reflow --out {path}`)")
        cfg = TokenCacheDataset.Config(path=str(path), resolution=manifest["resolution"],
                                       classes=len(manifest["class_names"]), flips=False)  # fmt: skip
        super().__init__(cfg)
        if self.keys != ["tokens"] or "noise" not in self.shards[0].tensors:
            raise DataError(f"{path}: a pair dataset holds 'tokens' and 'noise' in every shard")

    @property
    def teacher(self) -> dict:
        return dict(self.manifest.get("teacher") or {})

    def get_batch(self, idx: Tensor, flip: Tensor | None = None) -> dict[str, Any]:
        out = super().get_batch(idx)  # pairs are never flipped: the noise would no longer map to the sample
        out["noise"] = self._gather("noise", idx.cpu().numpy().astype(np.int64)).float()
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.get_batch(torch.tensor([i]))
        return {k: v[0] for k, v in b.items()}
