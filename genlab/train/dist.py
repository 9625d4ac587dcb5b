"""Work shared over the training processes outside the loss: this process's share of n items, and the gather.

A task's periodic sample grid is split so that every process generates ``ceil(n / world)`` of its images and the
main process writes the whole grid, instead of the main process sampling all of it while the others wait. Without
an initialised ``torch.distributed`` group (one process) both functions are the identity.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world size) of this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int) -> range:
    """This process's contiguous share of ``range(n)`` (the last shares may be shorter or empty)."""
    rank, size = world()
    per = -(-n // size)
    return range(min(rank * per, n), min((rank + 1) * per, n))


def gather_shares(part: Tensor, n: int) -> Tensor | None:
    """The rows every process made for its ``share(n)``, in order, on the main process (None elsewhere).
    ``part`` is this process's (len(share(n)), ...) tensor; all shares have the same trailing shape."""
    rank, size = world()
    if size == 1:
        return part
    per = -(-n // size)
    padded = part.new_zeros((per, *part.shape[1:]))
    padded[: len(part)] = part
    if dist.get_backend() == "nccl":
        padded = padded.cuda()
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n].cpu() if rank == 0 else None
