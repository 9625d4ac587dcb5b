"""FlowTurbo's velocity refiner (Zhao et al., NeurIPS 2024): a light model that corrects a cached velocity.

r(x_s, s, y, v_t) predicts the change of the base model's velocity, v(x_s, s) - v_t, where v_t was computed at an
earlier, noisier point (x_t, t) and x_s = x_t - (t - s) v_t is the Euler step from there. A few of its evaluations
replace the base model's in the last sampling steps (``genlab.samplers.flowturbo``).

The network is a DiT (``genlab.generators.dit``) whose input is [x, v] stacked on channels and whose output is the
velocity offset; the paper's refiner is one block of the base width, ~5% of SiT-XL's parameters, and the preset
``flowturbo-refiner`` sizes ours the same way relative to the quickstart model (one block, width 128).

Training (FlowTurbo's ``training_losses``, in genlab's time direction): per sample, s ~ U[0, t_max],
dt ~ U[0, dt_max], t = min(s + dt, 1), x_t = (1 - t) x0 + t eps,

    L = || v_t + r(x_s, s, y, v_t) - v(x_s, s, y) ||^2,  v_t = v(x_t, t, y),  x_s = x_t - (t - s) v_t,

with the frozen base model v and the label replaced by the null class with probability ``class_dropout`` (so the
refiner also refines unconditional velocities and guidance can be applied to it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from genlab.generators.base import Generator
from genlab.generators.dit import DiT, latent_spec
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

# per-sample random streams (the flow objective uses 0..2 for noise, time, label dropout)
NOISE, TIME, DROP, STEP = 0, 1, 2, 3


@register("refiner", "flowturbo")
class VelocityRefiner(nn.Module):
    @dataclass
    class Config:
        depth: int = 1  # DiT blocks (the paper: 1)
        hidden_size: int = 128  # width; the paper uses the base width, we keep ~5% of the base's parameters
        num_heads: int = 4
        patch_size: int = 0  # 0: the base model's patch size
        mlp_ratio: float = 4.0
        dt_max: float = 0.12  # training: the cached velocity is from up to dt_max earlier (FlowTurbo: 0.12)
        t_max: float = 1.0  # training: refined points have t ~ U[0, t_max] (R steps are the last ones)
        class_dropout: float = 0.1  # training: probability a label is replaced by the null class

        def validate(self) -> None:
            DiT.Config(self.depth, self.hidden_size, self.num_heads, max(self.patch_size, 1), self.mlp_ratio).validate()
            if not 0 < self.dt_max <= 1:
                raise ValueError(f"dt_max must be in (0, 1], got {self.dt_max}")
            if not 0 < self.t_max <= 1:
                raise ValueError(f"t_max must be in (0, 1], got {self.t_max}")
            if not 0.0 <= self.class_dropout < 1.0:
                raise ValueError(f"class_dropout must be in [0, 1), got {self.class_dropout}")

    def __init__(self, cfg: Config, *, spec: TokenSpec, num_classes: int):
        super().__init__()
        if cfg.patch_size <= 0:
            raise ValueError("refiner patch_size is 0: set it to the base model's patch size before building")
        self.cfg, self.spec, self.num_classes = cfg, spec, num_classes
        in_channels, input_size = spec.channels, spec.grid[0]
        self.in_channels, self.input_size = in_channels, input_size
        dit_cfg = DiT.Config(cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size, cfg.mlp_ratio)
        self.net = DiT(dit_cfg, spec=latent_spec(2 * in_channels, input_size), num_classes=num_classes,
                       out_channels=in_channels)  # fmt: skip

    def forward(self, x: Tensor, t: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """x, v (B, C, H, W), t (B,), y (B,) -> the velocity offset (B, C, H, W)."""
        return self.net(torch.cat([x, v.to(x.dtype)], dim=1), t, y)

    def saved_config(self) -> dict:
        """``refiner/config.json``: the config plus the latent geometry and class count it was built for."""
        return {
            "name": "flowturbo",
            **asdict(self.cfg),
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_saved(cls, saved: dict) -> VelocityRefiner:
        """The refiner ``saved_config()`` describes (weights not loaded); ValueError for a malformed config."""
        spec = dict(saved)
        spec.pop("name", None)
        try:
            dims = {k: int(spec.pop(k)) for k in ("in_channels", "input_size", "num_classes")}
            cfg = cls.Config(**spec)
            cfg.validate()
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a FlowTurbo refiner config ({e})") from None
        return cls(cfg, spec=latent_spec(dims["in_channels"], dims["input_size"]), num_classes=dims["num_classes"])


class RefinerTraining(Generator):
    """``loss(x0, labels, seeds) -> {"loss"}`` (the generator protocol's loss): the refiner learns, the base is
    frozen."""

    def __init__(self, base: nn.Module, refiner: VelocityRefiner):
        super().__init__()
        self.base = base.eval().requires_grad_(False)
        self.refiner = refiner

    def weights_module(self) -> nn.Module:
        return self.refiner

    def loss(self, x0: Tensor, labels: Tensor, seeds: Tensor) -> dict[str, Tensor]:
        cfg, B, dev = self.refiner.cfg, x0.shape[0], x0.device
        eps = per_sample_randn(seeds, tuple(x0.shape[1:]), stream=NOISE, device=dev, dtype=x0.dtype)
        s = cfg.t_max * per_sample_rand(seeds, stream=TIME, device=dev)  # (B,)
        t = (s + cfg.dt_max * per_sample_rand(seeds, stream=STEP, device=dev)).clamp(max=1.0)  # (B,)
        drop = per_sample_rand(seeds, stream=DROP, device=dev) < cfg.class_dropout
        y = torch.where(drop, torch.full_like(labels, self.refiner.num_classes), labels)
        view = (B, *([1] * (x0.ndim - 1)))
        tb, sb = t.view(view).to(x0.dtype), s.view(view).to(x0.dtype)
        with torch.no_grad():
            x_t = (1 - tb) * x0 + tb * eps
            v_t = self.base(x_t, t, y)
            x_s = x_t - (tb - sb) * v_t
            v_s = self.base(x_s, s, y)
        pred = self.refiner(x_s, s, y, v_t)
        loss = (pred.float() - (v_s - v_t).float()).pow(2).mean()
        return {"loss": loss}
