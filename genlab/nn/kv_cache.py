"""A key/value cache for autoregressive decoding: each layer keeps the keys and values of every position seen so far,
so a forward over the new positions only attends to the whole prefix (GPT: one token per step; VAR: one scale)."""

from __future__ import annotations

from torch import Tensor


class KVCache:
    """Keys and values of every layer, (B, H, max_len, Dh) each, allocated on a layer's first write with the dtype and
    device of its keys; ``update`` writes positions pos .. pos+n-1 in place (no concatenation per step). A plain
    object (not a module): one lives for one sampling call."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self.lengths: list[int] = []  # positions written per layer

    def update(self, layer: int, pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, H, n, Dh) at ``pos``; return the keys and values of positions 0 .. pos+n-1."""
        B, H, n, Dh = k.shape
        if pos + n > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions cannot hold position {pos + n - 1}")
        if layer == len(self.k):
            self.k.append(k.new_zeros(B, H, self.max_len, Dh))
            self.v.append(v.new_zeros(B, H, self.max_len, Dh))
            self.lengths.append(0)
        self.k[layer][:, :, pos : pos + n] = k
        self.v[layer][:, :, pos : pos + n] = v
        self.lengths[layer] = pos + n
        return self.k[layer][:, :, : pos + n], self.v[layer][:, :, : pos + n]

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, H, n, Dh) after what ``layer`` holds; return all its keys and values."""
        return self.update(layer, self.lengths[layer] if layer < len(self.lengths) else 0, k, v)

    def __len__(self) -> int:
        """Positions cached (those of layer 0)."""
        return self.lengths[0] if self.lengths else 0
