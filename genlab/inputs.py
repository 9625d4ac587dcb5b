"""Ranges of the command line's numeric and device arguments, checked before any work starts.

Each check returns the value or raises ``ValueError`` with one line saying the range; the CLI turns it into a
``UsageError`` (status 2). docs/reliability.md lists the ranges.
"""

from __future__ import annotations

import re

MAX_SEED = 2**63  # seeds are 63-bit: image i of a request uses seed SEED + i, which must stay below this
MAX_IMAGES = 10**7  # images one `genlab sample` / `genlab eval` may ask for (ImageNet FID uses 5e4)
MAX_STEPS = 10**5  # sampler steps


def check_seed(seed: int, count: int = 1, name: str = "--seed") -> int:
    """``seed`` such that ``seed .. seed + count - 1`` are all valid 63-bit seeds."""
    if not 0 <= seed <= MAX_SEED - max(count, 1):
        raise ValueError(f"{name} must be in [0, 2**63 - {max(count, 1)}] for {count} images, got {seed}")
    return seed


def check_count(value: int, name: str, high: int = MAX_IMAGES, low: int = 1) -> int:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high:,}], got {value:,}")
    return value


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"--port must be in [1, 65535], got {port}")
    return port


def check_device(device: str | None) -> str | None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused when that device is not there (None: the default)."""
    if device is None:
        return None
    import torch

    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", device)
    if not m:
        raise ValueError(f"--device must be cpu, cuda, cuda:N or mps, got {device!r}")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")
    return device
