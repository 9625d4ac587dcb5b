"""Multi-head self-attention through PyTorch's fused SDPA (optionally with QK-norm and 2-D RoPE), and the
transformer feed-forwards: DiT's GELU MLP and the SwiGLU one (Shazeer 2020) that LightningDiT uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.norms import make_norm
from genlab.nn.rope import apply_rope


def attention(
    q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool = False, mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """softmax(q k^T * scale) v over (B, H, N, Dh) queries and (B, H, S, Dh) keys (scale default 1 / sqrt(Dh)).
    ``is_causal``: query i sees keys 0..i (N = S); ``mask``: a boolean (N, S) (or broadcastable) of what each query may
    see, or a float one added to the scores (Swin's relative position bias). PyTorch's fused SDPA everywhere except
    bf16/fp16 on the CPU, where its kernel is slower than the explicit product at DiT's sequence lengths (measured with ``genlab bench train``: attention forward+backward 1.6-1.9x
    faster at 64-256 tokens; 2.7x under VAR's block-causal mask at 130 tokens), and at fewer than 32 keys of head
    dims under 16, where its CPU flash kernel's float32 outputs and gradients change with the thread count (issue
    27: head dims 1, 5-11 at 6-31 keys differ by an ulp at 1 and 2 threads; DiMR's tiny config, 17 tokens of dim 8)."""
    if q.device.type == "cpu" and (q.dtype in (torch.bfloat16, torch.float16) or thread_dependent(q, k)):
        scores = (q * (q.shape[-1] ** -0.5 if scale is None else scale)) @ k.transpose(-2, -1)  # (B, H, N, S)
        if is_causal:
            mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        if mask is not None and mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask is not None:  # an additive bias (Swin's relative positions and shifted-window mask)
            scores = scores + mask.to(scores.dtype)
        return softmax(scores) @ v
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


class _Softmax(torch.autograd.Function):
    """Softmax over the last dim whose backward is y ⊙ (g − Σ g ⊙ y), written out: torch's CPU kernel for it
    (``_softmax_backward_data``) changes its float32 result with the thread count (issue 27), these ops do not."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = x.softmax(dim=-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(dim=-1, keepdim=True))


def softmax(x: Tensor) -> Tensor:
    """Softmax over the last dim, with gradients that do not depend on the thread count (``_Softmax``)."""
    return _Softmax.apply(x)


def thread_dependent(q: Tensor, k: Tensor) -> bool:
    """Whether torch's CPU flash attention would give thread-count dependent results (see ``attention``)."""
    return k.shape[-2] < 32 and q.shape[-1] < 16


class Attention(nn.Module):
    """``qk_norm``: ``None``, or the norm (``layernorm`` | ``rmsnorm``, with learnable scale) applied to each head's
    q and k before RoPE, as in LightningDiT (which picks the norm type of its blocks). ``forward(x, rope)`` rotates
    q and k by a ``rope_2d`` table (2, N, Dh) when one is given."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool = True, qk_norm: str | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        # LightningDiT: nn.LayerNorm's defaults (affine, eps 1e-5) or its RMSNorm (scale, eps 1e-6)
        eps = 1e-5 if qk_norm == "layernorm" else 1e-6
        self.q_norm = make_norm(qk_norm, head_dim, affine=True, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(qk_norm, head_dim, affine=True, eps=eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``mask``: an optional boolean (N, N) (or broadcastable) of the keys each query may see."""
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = attention(q.to(v.dtype), k.to(v.dtype), v, mask=mask)  # (B, H, N, Dh); autocast norms may give fp32
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    """fc2(GELU(fc1(x))); ``approximate``: "tanh" (DiT's) or "none" (the exact GELU of ViT / CLIP / TiTok)."""

    def __init__(self, dim: int, hidden: int, *, approximate: str = "tanh"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """w3(silu(x W1) * x W2). ``fused``: W1 and W2 in one linear ``w12`` (LightningDiT's / DINOv2's layout); else
    separate ``w1`` and ``w2`` (Llama's layout, and faster on the CPU: the fused backward concatenates the two
    gradients, 7% slower for a SwiGLU forward+backward at width 256 -> 1024). ``bias=False`` is Llama's (and
    LlamaGen's) bias-free feed-forward. ``act="gelu"``: the gate through exact GELU instead (GEGLU, Shazeer 2020; DiMR's
    feed-forward)."""

    def __init__(self, dim: int, hidden: int, *, bias: bool = True, fused: bool = True, act: str = "silu"):
        super().__init__()
        if act not in ("silu", "gelu"):
            raise ValueError(f"unknown gate activation {act!r}; choose silu or gelu")
        self.act = F.silu if act == "silu" else F.gelu
        if fused:
            self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        else:
            self.w1, self.w2 = nn.Linear(dim, hidden, bias=bias), nn.Linear(dim, hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "w12"):
            gate, value = self.w12(x).chunk(2, dim=-1)  # (..., hidden) each
        else:
            gate, value = self.w1(x), self.w2(x)
        return self.w3(self.act(gate) * value)
