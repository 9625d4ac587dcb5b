"""FlexVAR: next-scale prediction without residuals (Jiao et al., "FlexVAR: Flexible Visual Autoregressive Modeling
without Residual Prediction", 2025; jiaosiyu1999/FlexVAR), on the non-residual tokens of tokenizer ``flexvq``.

VAR's transformer (genlab.generators.var, the same family) with three changes:

- each scale predicts the ground-truth token map at that scale (the VQ of the latent downsampled to s_k), not a
  residual, and its input is the previous map's codes bicubic-upsampled to s_k; so every step is a whole image and
  the scale schedule is free: ``SampleOptions.scales`` picks any increasing sides (the number of steps is its length);
- positions come from one learned 2-D grid (``pos_embed`` (1, D, G, G), 2-D sin-cos initialised), area-downsampled to
  each scale's side, instead of VAR's per-position and level embeddings, so any side has an embedding;
- training walks a random sub-schedule of the tokenizer's scales per sample (first and last kept, each other one
  with probability ``scale_keep``; FlexVAR draws random sides each batch): the positions of dropped scales are masked
  out as keys and carry no loss, and the next kept scale's input comes from the last kept one. The draws come from
  the per-sample seeds, so a sample's loss does not depend on its batch.

Sampling is VAR's (KV cache, CFG ramp t = (cfg - 1) * k / (K - 1), top-k/top-p); FlexVAR's evaluation uses cfg 2.5
(genlab's 3.5), top_k 900, top_p 0.95. FlexVAR's own rules are options an imported run sets (``genlab import
flexvar``): the ramp divided by min(K - 1, 9) (``ramp_steps: 9``), full guidance and greedy tokens above side 16
(``max_side: 16``), greedy tokens at every side outside its list (``sampled_sides``). Its LlamaGen-style CFG option
(a demo setting) is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.generators.base import GeneratorError, TokenCodes, TokenSpec, option
from genlab.generators.var import VAR
from genlab.nn import per_sample_rand, sincos_pos_embed_2d
from genlab.nn.sampling import drop_labels
from genlab.registry import register


@register("generator", "flexvar")
class FlexVAR(VAR):
    @dataclass
    class Config(VAR.Config):
        pos_grid: int = 0  # side G of the learned position grid; 0: twice the last scale (FlexVAR: 32 for 16)
        scale_keep: float = 0.5  # training: probability of keeping each intermediate scale of a sample's schedule

        def validate(self) -> None:
            super().validate()
            if self.pos_grid < 0 or not 0.0 <= self.scale_keep <= 1.0:
                raise ValueError("pos_grid must be >= 0 and scale_keep in [0, 1]")

    @dataclass
    class SampleOptions(VAR.SampleOptions):
        # FlexVAR's evaluation: cfg 2.5 (genlab's 3.5: VAR's convention + 1), top_k 900
        cfg: float = option(3.5, "guidance ramped over scales: t = (cfg-1)*k/(K-1), (1+t)*cond - t*uncond; 1 = none",
                            low=0.0, high=100.0)  # fmt: skip
        scales: tuple[int, ...] = option((), "scale schedule, sides coarse to fine (empty: the tokenizer's)", low=1)
        # FlexVAR's own rules (autoregressive_infer_cfg), set by `genlab import flexvar`; the defaults are genlab's
        ramp_steps: int = option(0, "guidance ramp t = (cfg-1)*k/min(K-1, ramp_steps); 0: k/(K-1) (FlexVAR: 9)", low=0)
        max_side: int = option(0, "sides above this: full guidance and greedy tokens; 0: none (FlexVAR: 16)", low=0)
        sampled_sides: tuple[int, ...] = option((), "sides drawn by top-k/top-p, any other greedy; empty: all "
                                                "(FlexVAR: 1,2,3,4,5,6,8,10,13,16,23,24,32)", low=1)  # fmt: skip

        def check(self) -> None:
            if list(self.scales) != sorted(set(self.scales)):
                raise ValueError(f"scales must be increasing, got {list(self.scales)}")

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int, codes: TokenCodes | None = None):
        super().__init__(cfg, spec=spec, num_classes=num_classes, codes=codes)
        D = cfg.dims[0]
        self.grid = cfg.pos_grid or 2 * self.scales[-1]
        if D % 4:
            raise GeneratorError(f"FlexVAR's 2-D sin-cos position grid needs a width divisible by 4, got {D}")
        pos = sincos_pos_embed_2d(D, self.grid).T.reshape(1, D, self.grid, self.grid)
        self.pos_embed = nn.Parameter(pos)  # replaces VAR's (1, L, D) table
        self.lvl_embed = None  # FlexVAR has no level embedding

    def position_embeddings(self, scales: tuple[int, ...]) -> Tensor:
        """(1, sum s^2, D): the position grid area-downsampled to every side of the schedule."""
        if max(scales) > self.grid:
            raise GeneratorError(f"scale {max(scales)} exceeds the position grid {self.grid} (Config.pos_grid)")
        return torch.cat([F.interpolate(self.pos_embed, size=(s, s), mode="area").flatten(2) for s in scales], 2).mT

    def schedule(self, options: VAR.SampleOptions) -> tuple[int, ...]:
        return tuple(getattr(options, "scales", ())) or self.scales

    def guidance_t(self, k: int, side: int, K: int, options) -> float:
        """t = (cfg - 1) * k / min(K - 1, ramp_steps) (FlexVAR's ratio si / min(K - 1, 9)), full cfg - 1 above
        ``max_side``; genlab's k / (K - 1) with the options at 0."""
        ramp, top = getattr(options, "ramp_steps", 0), getattr(options, "max_side", 0)
        if top and side > top:
            return options.cfg - 1
        return (options.cfg - 1) * k / max(min(K - 1, ramp) if ramp else K - 1, 1)

    def top_k_at(self, side: int, options) -> int:
        """1 (greedy) at a side above ``max_side`` or outside a non-empty ``sampled_sides``, else the option's."""
        top, sides = getattr(options, "max_side", 0), tuple(getattr(options, "sampled_sides", ()))
        return 1 if (top and side > top) or (sides and side not in sides) else options.top_k

    def next_input(self, k: int, scales: tuple[int, ...], codes: Tensor, state):
        """FlexVAR: the next input is scale k's codes bicubic-upsampled to the next side (nothing accumulates)."""
        if k + 1 == len(scales):
            return state, None
        return state, F.interpolate(codes, size=(scales[k + 1],) * 2, mode="bicubic")

    def loss(self, tokens: list[Tensor], labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over the positions of each sample's kept scales (see the module docstring)."""
        K, B, device = len(self.scales), labels.shape[0], labels.device
        if len(tokens) != K:
            raise GeneratorError(f"FlexVAR expects {K} token maps, got {len(tokens)}")
        keep = torch.ones(B, K, dtype=torch.bool, device=device)
        if K > 2:
            keep[:, 1:-1] = per_sample_rand(seeds, (K - 2,), stream=2, device=device) < self.cfg.scale_keep
        x_BLC = self.sub_schedule_inputs(tokens, keep)
        keep_BL = keep[:, self.levels]  # (B, L): positions of kept scales
        mask = self.mask[None, None] & keep_BL[:, None, None, :]  # (B, 1, L, L): block-causal over kept keys
        labels = drop_labels(labels, seeds, self.cfg.class_dropout, self.num_classes, stream=0)
        x, c = self.embed(labels, x_BLC)
        logits_BLV = self.blocks_and_head(x, c, mask, keep=self.drop_path_factors(seeds, device))
        target_BL = torch.cat([t.reshape(B, -1) for t in tokens], dim=1).to(device)
        ce_BL = F.cross_entropy(
            logits_BLV.transpose(1, 2), target_BL, reduction="none", label_smoothing=self.cfg.label_smoothing
        )
        w = keep_BL.float() / keep_BL.sum()
        acc = ((logits_BLV.argmax(-1) == target_BL).float() * w).sum()
        return {"loss": (ce_BL * w).sum(), "acc": acc.detach()}

    @torch.no_grad()
    def sub_schedule_inputs(self, tokens: list[Tensor], keep: Tensor) -> Tensor:
        """(B, L - s_1^2, C): scale k's input is the codes of the sample's last kept scale before k, upsampled."""
        codes = self.require_codes()
        maps = [codes.scale_codes(k, t) for k, t in enumerate(tokens)]  # (B, C, s_k, s_k)
        B, steps = keep.shape[0], torch.arange(len(self.scales), device=keep.device)
        out = []
        for k in range(1, len(self.scales)):
            prev = torch.where(keep[:, :k], steps[:k], -1).amax(dim=1)  # (B,): scale 0 is always kept
            s = self.scales[k]
            ups = torch.stack([F.interpolate(m, size=(s, s), mode="bicubic") for m in maps[:k]])  # (k, B, C, s, s)
            out.append(ups[prev, torch.arange(B)].flatten(2).transpose(1, 2))
        return torch.cat(out, dim=1)
