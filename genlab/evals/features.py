"""Stream images through the feature network, sharded over processes, keeping only the features.

Images are cut into batches ``[k*B, (k+1)*B)`` of global indices; under ``accelerate launch`` (or
``torchrun``) process ``r`` of ``W`` takes batches ``r, r+W, r+2W, ...`` and the features are
gathered and put back in index order, so the union, and every metric, is the same whatever the
process count. A generated image's seed follows its global index, so generation shards the same way.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from genlab.evals.base import EvalError, Features
from genlab.evals.inception import FeatureNet
from genlab.evals.sources import ImageSource


def spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(0, B), (B, 2B), ...]`` covering ``range(n)``."""
    if batch_size <= 0:
        raise EvalError(f"batch size must be positive, got {batch_size}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def process_state():
    """accelerate's process state; on a machine without CUDA, ``torchrun`` processes join as MULTI_CPU (gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def extract(
    source: ImageSource,
    net: FeatureNet,
    *,
    batch_size: int = 64,
    desc: str = "features",
    progress: bool = True,
    state=None,
) -> Features:
    """Features of all ``source.n`` images (every process returns the whole set, in index order)."""
    state = state or process_state()
    world, rank = state.num_processes, state.process_index
    mine = spans(source.n, batch_size)[rank::world]
    parts: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
    with tqdm(total=source.n, desc=desc, unit="img", disable=not (progress and state.is_main_process)) as bar:
        for start, stop in mine:
            images = source.batch(start, stop)  # (B, 3, H, W) uint8
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise EvalError(
                    f"{source.description}: expected uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}"
                )
            pool, logits = net(images)
            parts.append((start, pool, logits))
            bar.update((stop - start) * world)
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    parts.sort(key=lambda p: p[0])
    if not parts:
        raise EvalError(f"{source.description}: no images to evaluate")
    pool = torch.cat([p[1] for p in parts])  # (N, 2048)
    logits = torch.cat([p[2] for p in parts]) if net.has_logits else None  # (N, 1008)
    return Features(pool, logits, net.name)
