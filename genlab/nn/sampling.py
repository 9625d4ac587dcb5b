"""Logit sampling for token generators, once for every family (MaskGIT, the raster GPT, VAR/FlexVAR, ...): draws
from logits by inverting the CDF at uniforms the caller supplies (so a sample's tokens depend only on its own
seed: ``genlab.nn.rng.per_sample_rand``), top-k / top-p filtering with the published rule as a parameter,
classifier-free guidance on logits, and class dropout to the null class.

The rules differ between the papers' code and each family picks its own (the numbers stay each family's):

- ``rule="vocab"`` (VAR's ``sample_with_top_k_top_p_``; MaskGIT, which filters nothing): filter in vocabulary
  order (``filter_logits``), then invert the CDF in vocabulary order;
- ``rule="sorted"`` (LlamaGen / Hugging Face): keep the top k most likely, most likely first, keep a candidate while
  the probability above it is <= top_p, and invert the CDF in that sorted order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.nn.rng import per_sample_rand

RULES = ("vocab", "sorted")
GUIDANCE_RULES = ("lerp", "extrapolate")


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


def sample_sorted(logits: Tensor, u: Tensor, *, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """One id per row of logits (B, V) under the LlamaGen / Hugging Face rule: the top k (most likely first), a
    candidate kept while the probability above it is <= top_p, the CDF inverted in that order at u (B,)."""
    idx = None
    if top_k > 0 or top_p < 1.0:
        k = min(top_k, logits.shape[-1]) if top_k > 0 else logits.shape[-1]
        logits, idx = logits.topk(k, dim=-1)  # (B, k), most likely first
    probs = logits.softmax(dim=-1)
    if top_p < 1.0:
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > top_p, 0.0)
    cdf = probs.cumsum(dim=-1)  # (B, k)
    choice = torch.searchsorted(cdf, (u.to(cdf) * cdf[:, -1]).unsqueeze(-1), right=True)  # (B, 1)
    choice = choice.clamp_max(cdf.shape[-1] - 1)
    return (choice if idx is None else idx.gather(-1, choice)).squeeze(-1)


def sample_tokens(
    logits: Tensor, u: Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, rule: str = "vocab"
) -> Tensor:
    """Ids (...) from logits (..., V) at uniforms u (...): argmax at temperature 0, else logits / temperature
    filtered and drawn by ``rule`` (see the module docstring). Rows never mix: a sample's ids depend on its own
    logits and uniforms only."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if rule == "sorted":
        return sample_sorted(logits.float() / temperature, u, top_k=top_k, top_p=top_p)
    if rule != "vocab":
        raise ValueError(f"unknown sampling rule {rule!r}; rules: {', '.join(RULES)}")
    return sample_from_logits(filter_logits(logits / temperature, top_k, top_p), u)


def guide_logits(cond: Tensor, uncond: Tensor, scale: float, *, rule: str = "lerp") -> Tensor:
    """Classifier-free guidance on logits. ``rule="lerp"`` (MaskGIT, LlamaGen): uncond + scale (cond - uncond), with
    scale the guidance w (1 = conditional). ``rule="extrapolate"`` (VAR): (1 + scale) cond - scale uncond, with
    scale the weight t = w - 1 beyond the conditional (0 = conditional), exactly as VAR's code writes it."""
    if rule == "lerp":
        return uncond + scale * (cond - uncond)
    if rule == "extrapolate":
        return (1 + scale) * cond - scale * uncond
    raise ValueError(f"unknown guidance rule {rule!r}; rules: {', '.join(GUIDANCE_RULES)}")


def drop_labels(labels: Tensor, seeds: Tensor, p: float, null_class: int, *, stream: int) -> Tensor:
    """Class dropout for classifier-free guidance: each label becomes ``null_class`` with probability p, decided
    by its own seed (a uniform of ``stream``), so a sample's dropout does not depend on its batch."""
    drop = per_sample_rand(seeds, (), stream=stream, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def gumbel(u: Tensor) -> Tensor:
    """Standard Gumbel noise from uniforms in [0, 1) (MaskGIT's choice temperature)."""
    return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
