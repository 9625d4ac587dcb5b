"""Counted FLOPs per forward of the paper-size backbones at three token counts (issue 25): LaMamba-Diff's cost should
grow about linearly in tokens, DiT's faster (attention is quadratic in tokens). The backbones take square latents, so
the token counts quadruple (256, 1024, 4096); ``ratio_per_doubling`` is the square root of each step's ratio, the
factor per doubling of tokens (2 for linear cost).

FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of batch 1 on the
``meta`` device (shapes only: no memory, no time). It counts matmuls, convolutions and attention at 2 FLOPs per
multiply-add; the selective scan is one op (``genlab::selective_scan``) whose formula is registered with
``register_flop_formula`` (VMamba's 9 B L D N + B D L multiply-adds). Papers (DiT, LaMamba-Diff, DiMR) quote
multiply-adds as "GFLOPs", so ``gmacs`` = counted / 2 is the column to hold against them.

Tokens are those of the first stage: DiT-XL/2 at latents 32/64/128 (patch 2) and LaMamba-Diff-XL at 16/32/64
(patch 1) both see 256, 1024 and 4096 tokens; DiMR-XL/2R (coarse branch at patch 2) is listed beside them.

    python benchmarks/backbone_flops.py   # writes benchmarks/results/backbone_flops-cpu.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from genlab.generators.dimr import DIMR_SIZES, DiMR
from genlab.generators.dit import DiT, latent_spec
from genlab.generators.lamamba import LAMAMBA_SIZES, LaMambaDiff

RESULTS = Path(__file__).parent / "results"
TOKENS = (256, 1024, 4096)


def counted_flops(build, size: int) -> tuple[int, int]:
    """(FLOPs of one batch-1 forward on (1, 4, size, size) latents, parameters), on the meta device."""
    with torch.device("meta"):
        model = build(latent_spec(4, size))
        x, t, y = torch.empty(1, 4, size, size), torch.empty(1), torch.zeros(1, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            model(x, t, y)
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


MODELS = {
    "DiT-XL/2": (2, lambda spec: DiT(DiT.Config(depth=28, hidden_size=1152, num_heads=16, patch_size=2), spec=spec,
                                     num_classes=1000, out_channels=8)),
    "LaMamba-Diff-XL": (1, lambda spec: LaMambaDiff(LaMambaDiff.Config(**LAMAMBA_SIZES["XL"]), spec=spec,
                                                    num_classes=1000, out_channels=8)),
    "DiMR-XL/2R": (2, lambda spec: DiMR(DiMR.Config(**DIMR_SIZES["XL/2R"]), spec=spec, num_classes=1000)),
}  # fmt: skip


def main() -> dict:
    out = {"method": "torch.utils.flop_counter.FlopCounterMode, one batch-1 forward on the meta device", "models": {}}
    for name, (patch, build) in MODELS.items():
        rows = []
        for tokens in TOKENS:
            size = int(tokens**0.5) * patch
            flops, params = counted_flops(build, size)
            rows.append({"tokens": tokens, "latent": size, "image_px": 8 * size, "params": params,
                         "gflops_counted": round(flops / 1e9, 2), "gmacs": round(flops / 2e9, 2)})  # fmt: skip
        for a, b in zip(rows, rows[1:]):
            b["ratio_vs_previous"] = round(b["gflops_counted"] / a["gflops_counted"], 3)
            b["ratio_per_doubling"] = round((b["gflops_counted"] / a["gflops_counted"]) ** 0.5, 3)
        out["models"][name] = rows
        print(name)
        for r in rows:
            ratio = (
                f"x{r['ratio_vs_previous']:.2f} (x{r['ratio_per_doubling']:.2f} per doubling)"
                if "ratio_vs_previous" in r
                else ""
            )
            print(f"  {r['tokens']:5d} tokens  {r['gmacs']:9.2f} GMACs  {ratio}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backbone_flops-cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
