"""Drawing token ids from logits with top-k / top-p filtering, from uniforms the caller supplies (so a sample's
tokens depend only on its own seed: ``genlab.nn.rng.per_sample_rand``)."""

from __future__ import annotations

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Logits (..., V) with the tokens outside the top k, then outside the nucleus p, set to -inf. The rules of
    VAR's ``sample_with_top_k_top_p_``: top-k keeps every token at least as likely as the k-th; top-p drops the
    least likely tokens whose cumulative probability (ascending) is <= 1 - p, always keeping the most likely one.
    ``top_k`` 0 or >= V and ``top_p`` 0 or 1 turn a filter off."""
    V = logits.shape[-1]
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[..., -1:] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_from_logits(logits: Tensor, uniforms: Tensor) -> Tensor:
    """Ids (...) drawn from softmax(logits (..., V)) by inverting the CDF at ``uniforms`` (...) in [0, 1)."""
    probs = logits.float().softmax(dim=-1)
    cdf = probs.cumsum(dim=-1)
    u = uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * cdf[..., -1:]  # scale by the total: rounding leaves < 1
    ids = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return ids.clamp_max(logits.shape[-1] - 1)
