"""A key/value cache for autoregressive decoding: each layer keeps the keys and values of every position seen so far,
so a forward over the new positions only attends to the whole prefix (GPT: one token per step; VAR: one scale)."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per layer, keys and values (B, H, N, Dh) of the N positions seen so far; ``extend`` appends the new ones and
    returns the whole prefix. A plain object (not a module): one lives for one sampling call."""

    def __init__(self, num_layers: int):
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, H, n, Dh) keys and values of n new positions to ``layer``'s; return all (B, H, N + n, Dh)."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def __len__(self) -> int:
        """Positions cached (those of layer 0)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]
