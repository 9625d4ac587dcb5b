"""Convolutions whose outputs and gradients do not depend on the CPU thread count (issue 27)."""

from __future__ import annotations

import contextlib

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


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, names, init and outputs to float rounding) whose output and gradients on the
    CPU do not depend on the thread count. torch's CPU convolutions run on oneDNN, whose weight gradient sums the
    batch in one partial buffer per thread (and whose 1x1 forwards block the channels by the thread count), so every
    conv-net tokenizer's weights changed with ``torch.get_num_threads()`` (issue 27). Here the weight gradient (and
    1x1 kernels wholly) run on ATen's own im2col + GEMM kernels (oneDNN and NNPACK off for those calls only): one
    GEMM per sample, the weight gradient accumulated over the samples in order; the rest stays on oneDNN
    (``conv2d``). Elsewhere (CUDA) it is ``nn.Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """``F.conv2d`` with results independent of the CPU thread count (see ``Conv2d``). Kernels larger than 1x1 run
    forward and input gradient on oneDNN (thread-invariant, and 3-6x faster than ATen's GEMM form) and only the weight
    gradient on ATen's kernels (``_WeightGradConv``); 1x1 kernels, whose oneDNN forward blocks the channels by the
    thread count, run wholly on ATen (as fast there). Under CPU autocast ATen's part computes in float32 and returns
    autocast's dtype: ATen's GEMM has no fast bf16 path once oneDNN is off."""
    pair = torch.nn.modules.utils._pair
    args = (pair(stride), pair(padding), pair(dilation), groups)
    if weight.shape[-2:] != (1, 1):
        return _WeightGradConv.apply(x, weight, bias, *args)
    if not torch.is_autocast_enabled("cpu"):
        return _AtenConv.apply(x, weight, bias, *args)
    with torch.autocast("cpu", enabled=False):
        out = _AtenConv.apply(x.float(), weight.float(), None if bias is None else bias.float(), *args)
    return out.to(torch.get_autocast_dtype("cpu"))


@contextlib.contextmanager
def aten_kernels():
    """oneDNN and NNPACK off (NNPACK would take float32 stride-1 convolutions of batches of 16 and more)."""
    mkldnn, nnpack = torch._C._get_mkldnn_enabled(), torch._C._get_nnpack_enabled()
    torch._C._set_mkldnn_enabled(False)  # only these two flags (mkldnn.flags() also sets TF32, with a warning)
    torch._C._set_nnpack_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(mkldnn)
        torch._C._set_nnpack_enabled(nnpack)


class _AtenConv(torch.autograd.Function):
    """Convolution forward and backward with oneDNN disabled (ATen's slow_conv2d: per-sample im2col + GEMM)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.args = (stride, padding, dilation, groups, None if bias is None else [bias.shape[0]])
        with aten_kernels():
            return torch.ops.aten.convolution(x, weight, bias, stride, padding, dilation, False, (0, 0), groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_sizes = ctx.args
        need = ctx.needs_input_grad
        mask = [need[0], need[1], bias_sizes is not None and need[2]]
        with aten_kernels():
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, weight, bias_sizes, stride, padding, dilation, False, (0, 0), groups, mask
            )
        return gx, gw, gb, None, None, None, None


class _WeightGradConv(torch.autograd.Function):
    """oneDNN's convolution forward and input gradient (their results do not depend on the thread count; tested in
    tests/test_nn_thread_invariant.py), ATen's for the weight gradient (oneDNN sums the batch's weight gradient in
    one buffer per thread). Under CPU autocast the forward and input gradient run in autocast's dtype as
    ``nn.Conv2d``'s do, the weight gradient in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = None if bias is None else bias.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.args = (stride, padding, dilation, groups, None if bias is None else [bias.shape[0]])
        ctx.dtypes = (x.dtype, weight.dtype)
        with torch.autocast("cpu", enabled=False):
            return torch.ops.aten.convolution(xc, wc, bc, stride, padding, dilation, False, (0, 0), groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_sizes = ctx.args
        need = ctx.needs_input_grad
        conv = (stride, padding, dilation, False, (0, 0), groups)
        gx = gw = gb = None
        if need[0]:
            gx = torch.ops.aten.convolution_backward(grad, x, weight, None, *conv, [True, False, False])[0]
            gx = gx.to(ctx.dtypes[0])
        if need[1] or (bias_sizes is not None and need[2]):
            mask = [False, need[1], bias_sizes is not None and need[2]]
            with aten_kernels():
                _, gw, gb = torch.ops.aten.convolution_backward(
                    grad.float(), x.float(), weight.float(), bias_sizes, *conv, mask
                )
            gw = None if gw is None else gw.to(ctx.dtypes[1])
        return gx, gw, gb, None, None, None, None


def make_thread_invariant(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` (e.g. torchvision's VGG) into ``Conv2d``, in place: the same
    parameters, a thread-invariant forward and backward. Returns ``module``."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return module
