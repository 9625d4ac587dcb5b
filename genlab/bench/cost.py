"""Counted cost: GFLOPs per image of one real sampling run, for every generator in one column.

``count_sampling(pipe)`` runs the generator's own ``sample`` (at the run's default options, or given ones) on a
small batch under ``torch.utils.flop_counter.FlopCounterMode``, then the tokenizer's ``decode`` under another,
and divides by the batch. Nothing is estimated by hand: whatever the sampler executes is what is counted — DiT's
backbone once per NFE (twice the batch under guidance), MaskGIT's and ENAT's steps (ENAT's reuse shows as
fewer encoded tokens), GPT's KV-cached single-token forwards, VAR's scales, ResGen's steps and its
re-quantization distances.

What FlopCounterMode counts: matrix products, convolutions and attention, at 2 FLOPs per multiply-add; element-
wise ops, norms, softmax and sorting are not counted (the usual convention of the papers' GFLOPs). The CPU's
fused attention kernel (``_scaled_dot_product_flash_attention_for_cpu``) has no formula in PyTorch's table; it
gets the same formula as the CUDA kernels here (``CPU_ATTENTION``), else attention would count 0 on the CPU.

Counting runs the real sampler, so it costs one sampling of ``n`` images: ``genlab info`` counts presets only
up to ``MAX_PARAMS`` parameters (meta tensors cannot run samplers: they branch on values) and says "not counted"
for bigger ones unless asked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from genlab.generators.base import SampleOptions

MAX_PARAMS = 50_000_000  # genlab info counts presets up to this many parameters (generator + tokenizer) by default


def cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """The CUDA kernels' SDPA formula (2 FLOPs per multiply-add of q k^T and of p v), for the CPU kernel."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops}
COUNTED = "matmul/conv/attention FLOPs (FlopCounterMode, 2 per multiply-add; elementwise ops not counted)"


def counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also knows the CPU attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


def count_flops(fn, *args, **kwargs) -> tuple[int, Any]:
    """(FLOPs, result) of ``fn(*args, **kwargs)`` under ``torch.no_grad`` (FlopCounterMode's module tracker does not
    work under ``torch.inference_mode``, so a caller's inference mode is lifted for the count)."""
    with torch.inference_mode(False), torch.no_grad(), counter() as c:
        out = fn(*args, **kwargs)
    return c.get_total_flops(), out


def count_sampling(pipe, *, options: SampleOptions | dict | None = None, n: int = 2, seed: int = 0) -> dict:
    """GFLOPs per image of sampling ``n`` images (classes 0, 1, ..., seeds seed..seed+n-1) at ``options``
    (default: the run's sampling options), split into the generator's sampling and the tokenizer's decoding."""
    opts = options if isinstance(options, SampleOptions) else pipe.sample_options(options)
    device = next(pipe.weights.parameters()).device
    labels = (torch.arange(n) % len(pipe.class_names)).to(device)
    seeds = torch.arange(seed, seed + n, dtype=torch.long)
    gen, res = count_flops(pipe.generator.sample, labels, seeds, opts)
    dec, _ = count_flops(pipe.tokenizer.decode, res.tokens)
    return {
        "gflops_per_image": (gen + dec) / n / 1e9,
        "generator_gflops_per_image": gen / n / 1e9,
        "decode_gflops_per_image": dec / n / 1e9,
        "nfe": res.nfe,
        "batch": n,
        "counted": COUNTED,
    }


def describe(cost: dict) -> str:
    """One line for people."""
    if "not_counted" in cost:
        return f"not counted ({cost['not_counted']})"
    return (
        f"{cost['gflops_per_image']:.4g} GFLOPs/image (generator {cost['generator_gflops_per_image']:.4g} at "
        f"{cost['nfe']} NFE, tokenizer decode {cost['decode_gflops_per_image']:.4g}; counted on a batch of "
        f"{cost['batch']} at the default sampling options)"
    )


def preset_cost(cfg, *, force: bool = False, n: int = 2) -> dict:
    """The counted cost of a preset's model at random weights (the count does not depend on the weights), or
    {"not_counted": why} when it is too big to sample cheaply (``force`` counts anyway) or cannot be built."""
    from genlab.pipeline import Pipeline

    try:
        size = sum(Pipeline.from_config(cfg, device=torch.device("meta")).param_counts().values())
        if size > MAX_PARAMS and not force:
            return {"not_counted": f"{size / 1e6:.0f}M parameters: counting runs the sampler; pass --cost to count"}
        torch.manual_seed(0)
        pipe = Pipeline.from_config(cfg).eval()
    except (OSError, ValueError, RuntimeError) as e:  # e.g. a tokenizer run that does not exist yet
        return {"not_counted": f"the preset's model cannot be built here: {str(e).splitlines()[0]}"}
    return count_sampling(pipe, n=n)
