"""A depthwise convolution whose gradients do not depend on the CPU thread count."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, padding=k // 2, groups=C)`` (same parameters, names and init), computed as the sum of
    k² shifted, per-channel-scaled copies of the zero-padded input. torch's CPU depthwise-conv backward accumulates
    the weight gradient in per-thread pieces (a different sum at another thread count); this form's gradients are
    broadcast products, reduced the same way at any thread count. Work: k² multiply-adds per output, as the conv."""

    def __init__(self, channels: int, kernel_size: int, *, bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        k = self.kernel_size[0]
        H, W = x.shape[-2:]
        xp = F.pad(x, (k // 2,) * 4)
        w = self.weight.view(1, -1, k, k)
        out = sum(xp[:, :, i : i + H, j : j + W] * w[:, :, i, j, None, None] for i in range(k) for j in range(k))
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


def depthwise_reference(conv: DepthwiseConv2d, x: Tensor) -> Tensor:
    """torch's own convolution with the same weights (for tests)."""
    return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)


class MatmulConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, names and init; no groups or dilation) computed as im2col and one matmul.
    torch's CPU convolution backward sums the weight gradient in per-thread pieces; a matmul's does not depend on
    the thread count (the rule of tests/test_threads.py)."""

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, O, H', W')
        if self.groups != 1 or self.dilation != (1, 1) or isinstance(self.padding, str):
            raise ValueError("MatmulConv2d takes plain convolutions (groups 1, dilation 1, numeric padding)")
        B, _, H, W = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (B, C*kh*kw, L)
        out = self.weight.view(self.out_channels, -1) @ cols  # (B, O, L)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1)
        return out.view(B, self.out_channels, (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1)
