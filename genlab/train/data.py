"""Which samples each step sees: a seeded, resumable stream of epoch permutations.

Sample number j of the run (counting across steps and micro-batches of the global batch) is
``perm_{j // N}[j % N]``, where ``perm_e`` is a permutation seeded by (seed, e). The data position
is therefore a pure function of the step: resuming at step s needs nothing but s, and splitting a
global batch across processes changes which process computes a sample, never which samples are seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from genlab.nn.rng import _mix, per_sample_rand

FLIP_STREAM = 7


class SampleStream:
    def __init__(self, num_items: int, seed: int):
        if num_items <= 0:
            raise ValueError("the dataset is empty")
        self.n, self.seed = num_items, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def perm(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def indices(self, start: int, count: int) -> Tensor:
        """Dataset indices of run-samples ``start .. start + count - 1``."""
        parts, j, end = [], start, start + count
        while j < end:
            e, pos = divmod(j, self.n)
            take = min(end - j, self.n - pos)
            parts.append(self.perm(e)[pos : pos + take])
            j += take
        return torch.cat(parts)


def flips(seeds: Tensor) -> Tensor:
    """Per-sample horizontal-flip decisions, drawn from each sample's own seed."""
    return per_sample_rand(seeds, stream=FLIP_STREAM) < 0.5


class StepBatches(torch.utils.data.Sampler):
    """For DataLoader-backed datasets: yields, per micro-batch, this process's ``(index, flip)`` list."""

    def __init__(self, plan, start_step: int, end_step: int):
        self.plan, self.start, self.end = plan, start_step, end_step

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        for step in range(self.start, self.end):
            for micro in range(self.plan.grad_accum):
                idx, seeds = self.plan.local(step, micro)
                yield list(zip(idx.tolist(), flips(seeds).tolist()))

    def __len__(self) -> int:
        return (self.end - self.start) * self.plan.grad_accum
