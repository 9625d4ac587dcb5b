"""How large a model genlab builds: counted on the meta device before any memory is allocated.

A run folder or a preset may come from someone else, and a config of depth and width 100,000 asks for ~10^16
parameters: built for real, that is an allocation error or a machine swapping to death. ``check_build`` builds the
model on the meta device first, under a counter that stops the build as soon as its tensors pass
``MAX_PARAMETERS`` (so even a billion-layer config costs nothing), then compares the exact count and its bytes
with the limit and, for a build on the CPU, with the memory the machine has available (``MemAvailable``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.overrides import TorchFunctionMode

from genlab.config import ConfigError

MAX_PARAMETERS = 20_000_000_000  # 10x the largest paper size genlab names (VAR-d30, 2.0B); 80 GB in float32
_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
              torch.arange, torch.tensor, torch.eye, torch.linspace}  # fmt: skip


class TooLarge(Exception):
    pass


class _Counter(TorchFunctionMode):
    """Adds up the elements of every tensor a factory function creates; raises past ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.total = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _FACTORIES and isinstance(out, torch.Tensor):
            self.total += out.numel()
            if self.total > self.limit:
                raise TooLarge
        return out


def available_memory() -> int | None:
    """Bytes of memory the machine can still give (Linux ``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_build(build: Callable[[], torch.nn.Module], what: str, *, allocate: bool = True) -> torch.nn.Module:
    """``build()`` on the meta device, refused with a ``ConfigError`` (naming ``what`` and the number) when its
    parameters and buffers exceed ``MAX_PARAMETERS`` or, if ``allocate`` (the model is to be built on the CPU),
    the available memory. Returns the meta model."""
    counter = _Counter(MAX_PARAMETERS)
    try:
        with torch.device("meta"), counter:
            model = build()
    except TooLarge:
        raise ConfigError(
            f"{what}: the model would have more than {MAX_PARAMETERS:,} parameters (genlab's limit); "
            "check its depth, width and sizes"
        ) from None
    tensors = [*model.parameters(), *model.buffers()]
    n = sum(t.numel() for t in tensors)
    size = sum(t.numel() * t.element_size() for t in tensors)
    if n > MAX_PARAMETERS:
        raise ConfigError(f"{what}: the model would have {n:,} parameters, more than genlab's limit of "
                          f"{MAX_PARAMETERS:,}; check its depth, width and sizes")  # fmt: skip
    free = available_memory() if allocate else None
    if free is not None and size > free:
        raise ConfigError(f"{what}: the model's {n:,} parameters need {size / 2**30:.1f} GiB, more than the "
                          f"{free / 2**30:.1f} GiB of memory available")  # fmt: skip
    return model
