"""OmniTokenizer's transformer pieces (Wang et al. 2024, FoundationVision/OmniTokenizer ``modules/attention.py``),
on tokens laid out as video ``(B, T, h, w, D)`` throughout: a block reshapes them to the axis it attends over.

- ``PEG``: the positional encoding generator (CPVT; Phenaki's C-ViViT, where the public code takes it from), a
  depthwise 3x3x3 convolution over (t, h, w) added before every global block; ``causal`` pads two past frames and
  none ahead, so frame j never sees frame j + 1.
- ``CosineAttention``: the public ``Attention``: bias-free q / kv / out projections, q from a bias-free LayerNorm of
  the input but k and v from the input itself (the public code takes its kv input before its norm), q and k
  l2-normalised per head and scaled per feature by learned vectors, logits times 8 (cosine-similarity attention);
  2-D RoPE on the spatial grid, a causal mask over frames.
- ``WindowAttention``: Swin's W-MSA (no shift) with a learned relative position bias, as the public ``w`` block.
- ``FeedForward``: LayerNorm -> GEGLU (hidden = int(mult * 2/3 * width), no biases), Phenaki's.
- ``Stack``: blocks over the spatial grid of each frame (``t`` global, ``w`` window) or over each position's frames
  (``t`` causal global), then a bias-free LayerNorm (the public ``norm_out``).

The public code runs its PEG inside the temporal stack on tokens laid out ``(b h w) t d`` but reshaped as
``b t h w d`` (its own "TO FIX"); here every PEG sees the true layout unless ``public_peg`` (imported checkpoints). Its SDPA path (torch >= 2.1) never adds the
"rel" continuous position bias nor the ALiBi bias it builds; neither exists here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn import LayerNorm, SwiGLU, apply_rope, rope_2d
from genlab.nn.attention import attention
from genlab.nn.embeddings import relative_position_index

LOGIT_SCALE = 8.0  # the public Attention's scale of cosine similarities


class PEG(nn.Module):
    """x -> DWConv3d(x) over (t, h, w), zero-padded; ``causal``: frames padded (2, 0), else (1, 1). Parameters as
    ``nn.Conv3d(D, D, 3, groups=D)`` (``dsconv``); computed as 27 shifted, per-channel-scaled copies of the padded
    input, whose gradients do not depend on the CPU thread count (as ``genlab.nn.conv.DepthwiseConv2d``)."""

    def __init__(self, dim: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, h, w, D) -> (B, T, h, w, D)
        _, T, h, w, _ = x.shape
        past, ahead = (2, 0) if self.causal else (1, 1)
        xp = F.pad(x, (0, 0, 1, 1, 1, 1, past, ahead))  # (B, T+2, h+2, w+2, D)
        k = self.dsconv.weight[:, 0]  # (D, 3, 3, 3)
        out = self.dsconv.bias
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    out = out + xp[:, a : a + T, b : b + h, c : c + w] * k[:, a, b, c]
        return out


class CosineAttention(nn.Module):
    """softmax(8 * (s_q ⊙ q/|q|) · (s_k ⊙ k/|k|)) v per head, q = LN(x) W_q, (k, v) = x W_kv; q and k rotated by
    RoPE first when given."""

    def __init__(self, dim: int, num_heads: int, *, causal: bool = False):
        super().__init__()
        self.num_heads, self.causal = num_heads, causal
        head_dim = dim // num_heads
        self.norm = LayerNorm(dim, bias=False)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q_scale = nn.Parameter(torch.ones(head_dim))
        self.k_scale = nn.Parameter(torch.ones(head_dim))
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, rope: Tensor | None = None) -> Tensor:  # x (B, N, D)
        B, N, D = x.shape
        H = self.num_heads
        q = self.to_q(self.norm(x)).view(B, N, H, D // H).transpose(1, 2)  # (B, H, N, Dh)
        k, v = self.to_kv(x).view(B, N, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, Dh) each
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        out = attention(q, k, v, is_causal=self.causal, scale=LOGIT_SCALE)  # (B, H, N, Dh)
        return self.to_out(out.transpose(1, 2).reshape(B, N, D))


class WindowAttention(nn.Module):
    """Attention within non-overlapping w x w windows of each frame, plus a learned relative position bias (Swin)."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.norm = LayerNorm(dim, bias=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # x (B, h, w, D) -> (B, h, w, D)
        B, h, w, D = x.shape
        s, H = self.window, self.num_heads
        win = self.norm(x).view(B, h // s, s, w // s, s, D).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, D)
        n = win.shape[0]
        q, k, v = self.qkv(win).view(n, s * s, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)  # (n, H, s*s, Dh)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (H, s*s, s*s)
        out = attention(q, k, v, mask=bias.to(q.dtype)).transpose(1, 2).reshape(n, s * s, D)
        out = self.proj(out).view(B, h // s, w // s, s, s, D).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(B, h, w, D)


class FeedForward(nn.Module):
    """x -> GEGLU(LN(x)): w3(gelu(x W_gate) * x W_value), hidden int(mult * 2/3 * dim), no biases."""

    def __init__(self, dim: int, mult: float):
        super().__init__()
        self.norm = LayerNorm(dim)
        self.mlp = SwiGLU(dim, int(mult * (2 / 3) * dim), bias=False, act="gelu")

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.norm(x))


class Block(nn.Module):
    """``t``: x + PEG(x), x + attention(x) over the stack's axis, x + FF(x); ``w``: x + window attention, x + FF."""

    def __init__(self, kind: str, dim: int, num_heads: int, mult: float, *, temporal: bool, causal: bool, window: int,
                 public_peg: bool = False):  # fmt: skip
        super().__init__()
        self.kind, self.temporal, self.public_peg = kind, temporal, public_peg
        if kind == "t":
            self.peg = PEG(dim, causal)
            self.attn = CosineAttention(dim, num_heads, causal=causal and temporal)
        else:
            self.attn = WindowAttention(dim, num_heads, window)
        self.ff = FeedForward(dim, mult)

    def forward(self, x: Tensor, rope: Tensor | None) -> Tensor:  # x (B, T, h, w, D)
        B, T, h, w, D = x.shape
        if self.kind == "w":
            x = x + self.attn(x.view(B * T, h, w, D)).view(B, T, h, w, D)
            return x + self.ff(x)
        if not self.public_peg:
            x = x + self.peg(x)
        if self.temporal:
            seq = x.permute(0, 2, 3, 1, 4).reshape(B * h * w, T, D)  # each position's frames
            if self.public_peg:  # the public code's: its (b h w) t d tokens reshaped as b t h w d for the PEG
                seq = seq + self.peg(seq.reshape(B, T, h, w, D)).reshape(B * h * w, T, D)
            seq = seq + self.attn(seq)
            seq = seq + self.ff(seq)
            return seq.view(B, h, w, T, D).permute(0, 3, 1, 2, 4)
        seq = x.reshape(B * T, h * w, D)  # each frame's grid
        seq = seq + self.attn(seq, rope)
        return (seq + self.ff(seq)).view(B, T, h, w, D)


class Stack(nn.Module):
    """Blocks of ``kinds`` (a string of ``t`` / ``w``) over frames' grids or positions' frames, then ``norm_out``."""

    def __init__(self, kinds: str, dim: int, num_heads: int, mult: float, *, temporal: bool, causal: bool,
                 window: int, rope: bool, public_peg: bool = False):  # fmt: skip
        super().__init__()
        self.head_dim, self.rope = dim // num_heads, rope and not temporal
        self.blocks = nn.ModuleList(
            Block(k, dim, num_heads, mult, temporal=temporal, causal=causal, window=window, public_peg=public_peg)
            for k in kinds
        )
        self.norm_out = LayerNorm(dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, h, w, D) -> (B, T, h, w, D)
        rope = rope_2d(self.head_dim, tuple(x.shape[2:4])).to(x.device) if self.rope else None
        for block in self.blocks:
            x = block(x, rope)
        return self.norm_out(x)


def patchify(x: Tensor, pt: int, p: int) -> Tensor:
    """Clips (B, C, T, H, W) -> tubelets (B, T/pt, H/p, W/p, C*pt*p*p), features ordered (c, pt, p1, p2)."""
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // pt, pt, H // p, p, W // p, p).permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, p, p)
    return x.reshape(B, T // pt, H // p, W // p, C * pt * p * p)


def unpatchify(x: Tensor, pt: int, p: int, channels: int = 3) -> Tensor:
    """The inverse of ``patchify``: (B, t, h, w, C*pt*p*p) -> (B, C, t*pt, h*p, w*p)."""
    B, t, h, w, _ = x.shape
    x = x.reshape(B, t, h, w, channels, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, t, pt, h, p, w, p)
    return x.reshape(B, channels, t * pt, h * p, w * p)
