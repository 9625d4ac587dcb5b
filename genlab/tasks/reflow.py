"""Tasks ``reflow`` and ``slimflow``: a student flow trained on a frozen teacher's noise-sample pairs.

- ``reflow`` (Liu et al. 2022, "Flow Straight and Fast"; rfpp's recipe, Lee et al. 2024): the 2-rectified flow,
  initialised from the teacher, trained on pairs (Z_0, Z_1 = ODE_teacher(Z_0)) with the ``rfpp`` objective (U-shaped
  t, pseudo-Huber or LPIPS-Huber). Its paths are straighter, so it samples well in 1-2 steps. With
  ``reflow.distill: true`` the same pairs train one-step distillation instead (t = 1 only: f(Z_0, 1) ≈ Z_0 - Z_1;
  with ``premetric: lpips_huber`` the loss at t = 1 is LPIPS(Z_0 - f, Z_1)), usually from a 2-rectified teacher.
- ``slimflow`` (Zhu, Liu & Liu, "SlimFlow", ECCV 2024): a *smaller* student (any backbone size) from scratch.
  Stage ``anneal`` is annealing reflow: the noise of each pair is Z = (β z + (1 - β) Z_0) / sqrt(β² + (1 - β)²)
  with a fresh z and β falling linearly from 1 to 0 over ``anneal_steps`` (random pairings, i.e. 1-rectified
  flow, annealed into the teacher's pairs; our reading of its ``x0_randomness`` warm-up). Stage ``distill`` is
  flow-guided distillation of that 2-flow (the new teacher) into one step: the t = 1 pair loss plus
  ``guide_weight`` times d(x_t - t f(x_t, t), the 2-flow's ``guide_steps``-step Euler solution from x_t) at a
  random t on the pair's line, with d the objective's premetric (pseudo-Huber or LPIPS).

Pairs: ``reflow.pairs: PATH`` (written by ``genlab reflow``), else ``n`` pairs made into ``OUT/pairs`` first
(resumable) with the teacher's ``sampler`` at ``steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.config import ConfigError
from genlab.data.base import DataError
from genlab.data.pairs import PairDataset, write_pairs
from genlab.nn import per_sample_rand, per_sample_randn
from genlab.registry import register
from genlab.tasks.base import fit
from genlab.tasks.fewstep import (
    FewStepRunConfig,
    PerceptualDistance,
    Teacher,
    _load_teacher,
    build_student,
    preview,
    resolved_record,
)
from genlab.tasks.generator import GeneratorRun
from genlab.train import Hooks

ANNEAL, GUIDE = 5, 6  # per-sample streams (the flow objectives use 0..3)


@dataclass
class PairConfig:
    """How the pairs are made and used (sections ``reflow:`` and ``slimflow:``)."""

    pairs: str = ""  # a pair dataset from `genlab reflow`; "": make `n` pairs in OUT/pairs first
    n: int = 1024  # pairs to make when none are given
    sampler: str = "heun"  # the teacher's sampler for the pairs
    steps: int = 32  # its steps
    cfg: float = 1.0  # its guidance scale
    seed: int = 0  # pair i is made from seed seed + i
    batch_size: int = 64  # pairs per teacher batch
    init: Literal["teacher", "scratch"] = "teacher"  # the student's initial weights
    distill: bool = False  # one-step distillation on the pairs (t = 1 only) instead of reflow
    stage: Literal["anneal", "distill"] = "anneal"  # slimflow: annealing reflow, or flow-guided distillation
    anneal_steps: int = 0  # slimflow: steps over which random pairings anneal into the teacher's pairs (0: off)
    guide_weight: float = 1.0  # slimflow distill: weight of the teacher's few-step guidance term
    guide_steps: int = 2  # slimflow distill: Euler steps of the teacher from x_t for that term
    perceptual: Literal["auto", "lpips", "inception", "random-conv"] = "auto"  # lpips_huber's network
    lpips_path: str = ""  # local LPIPS-VGG weights for perceptual auto/lpips (never downloaded)
    perceptual_resize: int = 224  # images are resized to this side for the perceptual network (rfpp: 224; 0: off)

    def validate(self) -> None:
        for key in ("n", "steps", "batch_size", "guide_steps"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.anneal_steps < 0 or self.perceptual_resize < 0 or not 0 <= self.seed < 2**62:
            raise ValueError("anneal_steps and perceptual_resize must be >= 0, seed in [0, 2**62)")
        if not (self.guide_weight >= 0 and math.isfinite(self.guide_weight)):
            raise ValueError(f"guide_weight must be a number >= 0, got {self.guide_weight}")
        if not (0 <= self.cfg <= 100):
            raise ValueError(f"cfg must be in [0, 100], got {self.cfg}")


class PairTraining(nn.Module):
    """``forward(batch) -> loss`` of the student objective on the batch's pairs (``tokens`` Z_1, ``noise`` Z_0)."""

    def __init__(self, student, pc: PairConfig, *, slim: bool, teacher: nn.Module | None = None):
        super().__init__()
        self.generator, self.pc, self.slim, self.step = student, pc, slim, 0
        self.teacher = teacher  # slimflow distill: the frozen 2-flow's backbone (guidance term)
        self.log_keys = ("guide",) if teacher is not None else ()

    def set_step(self, step: int) -> None:
        self.step = step

    def noise(self, eps: Tensor, seeds: Tensor) -> Tensor:
        """SlimFlow's annealed pairing: the pair's noise mixed with fresh noise, β from 1 to 0 over anneal_steps."""
        if not (self.slim and self.pc.stage == "anneal" and self.pc.anneal_steps):
            return eps
        beta = max(0.0, 1.0 - self.step / self.pc.anneal_steps)
        if beta == 0.0:
            return eps
        z = per_sample_randn(seeds, tuple(eps.shape[1:]), stream=ANNEAL, device=eps.device, dtype=eps.dtype)
        return (beta * z + (1 - beta) * eps) / math.sqrt(beta**2 + (1 - beta) ** 2)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x0, y, seeds = batch["tokens"], batch["label"], batch["seed"]
        eps = self.noise(batch["noise"].to(x0.dtype), seeds)
        one_step = self.pc.distill or (self.slim and self.pc.stage == "distill")
        t = torch.ones(len(x0), device=x0.device) if one_step else None
        out = self.generator.pair_loss(x0, eps, y, seeds, t)
        if self.teacher is not None:
            guide = self.guidance(x0, eps, y, seeds)
            out = {"loss": out["loss"] + self.pc.guide_weight * guide, "guide": guide.detach()}
        return out

    def guidance(self, x0: Tensor, eps: Tensor, y: Tensor, seeds: Tensor) -> Tensor:
        """d(x_t - t f(x_t, t), the teacher's few-step Euler solution from x_t) at t ~ U(0, 1] on the pair line."""
        gen = self.generator
        t = per_sample_rand(seeds, stream=GUIDE, device=x0.device).clamp_min(1e-3)  # (B,)
        tb = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        x_t = (1 - tb) * x0 + tb * eps
        with torch.no_grad():
            x = x_t
            for i in range(self.pc.guide_steps):  # t -> 0 in guide_steps equal Euler steps
                ti = t * (1 - i / self.pc.guide_steps)
                h = (t / self.pc.guide_steps).view_as(tb).to(x.dtype)
                x = x - h * self.teacher(x, ti, y)
        pred = gen.backbone(x_t, t, y).float()  # the student's velocity: its one-step data x_t - t pred
        v_tgt = (x_t.float() - x.float()) / tb.float()  # the velocity that lands on the teacher's solution
        return gen.premetric(pred, v_tgt, x_t, x.float(), t)


def pair_dataset(cfg: FewStepRunConfig, teacher: Teacher, out: Path) -> PairDataset:
    """The run's pairs: the given dataset (checked against the teacher), or ``n`` new ones in ``OUT/pairs``."""
    pc = cfg.method
    tp = teacher.pipeline
    if pc.pairs:
        try:
            ds = PairDataset(pc.pairs)
        except DataError as e:
            raise ConfigError(f"{cfg.METHOD}.pairs: {e}") from None
        from genlab.tokenizers.base import TokenSpec

        teacher.check_fits(TokenSpec("continuous", tuple(ds.manifest["token_spec"]["shape"])), len(ds.class_names))
        made_by = ds.teacher.get("sha256", "")
        if cfg.METHOD == "reflow" and made_by and made_by != teacher.sha256:
            print(f"{cfg.METHOD}: the pairs in {pc.pairs} were made by another teacher ({made_by[:12]}) than "
                  f"{teacher.path} ({teacher.sha256[:12]})")  # fmt: skip
        return ds
    options = tp.sample_options({"sampler": pc.sampler, "steps": pc.steps, "cfg": pc.cfg})
    path = out / "pairs"
    print(f"{cfg.METHOD}: making {pc.n} pairs with {teacher.path} ({pc.sampler}, {pc.steps} steps) in {path}")
    device = next(tp.weights.parameters()).device
    write_pairs(tp, path, n=pc.n, options=options, teacher={"path": str(teacher.path.resolve()),
                "sha256": teacher.sha256}, seed=pc.seed, batch_size=pc.batch_size, device=device)  # fmt: skip
    return PairDataset(path)


def train_on_pairs(cfg: FewStepRunConfig, out: Path, resume: str | None, *, slim: bool) -> Path:
    teacher = _load_teacher(cfg.teacher)
    cfg = cfg.resolve(teacher)
    pc = cfg.method
    student = build_student(cfg, teacher, init=pc.init)
    gen = student.generator
    if not hasattr(gen, "pair_loss"):
        raise ConfigError(f"objective: {cfg.objective.name} does not train on pairs; use objective rfpp")
    dataset = pair_dataset(cfg, teacher, out)
    if gen.cfg.premetric == "lpips_huber":
        gen.attach("perceptual", PerceptualDistance(student.tokenizer, pc.perceptual, pc.lpips_path,
                                                    pc.perceptual_resize))  # fmt: skip
    guide = teacher.pipeline.weights if slim and pc.stage == "distill" and pc.guide_weight > 0 else None
    model = PairTraining(gen, pc, slim=slim, teacher=guide)
    n_s, n_t = (sum(p.numel() for p in m.parameters()) for m in (student.weights, teacher.pipeline.weights))
    print(f"{cfg.METHOD}: student {n_s:,} parameters ({100 * n_s / n_t:.0f}% of the teacher's {n_t:,}), "
          f"init {pc.init}, {len(dataset)} pairs")  # fmt: skip
    hooks = Hooks(sample=preview(student, cfg.sample.options), export=lambda m, run_dir: student.save(run_dir))
    return fit(cfg.train, model, dataset, out, hooks, cfg.to_dict(), resume)


@dataclass
class ReflowRunConfig(FewStepRunConfig):
    """``task: reflow``: a 2-rectified flow (or its one-step distillation) on a teacher's pairs."""

    reflow: PairConfig = field(default_factory=PairConfig)
    METHOD = "reflow"
    SECTION = PairConfig


@dataclass
class SlimFlowRunConfig(FewStepRunConfig):
    """``task: slimflow``: a smaller one-step student by annealing reflow, then flow-guided distillation."""

    slimflow: PairConfig = field(default_factory=lambda: PairConfig(init="scratch"))
    METHOD = "slimflow"
    SECTION = PairConfig
    SECTION_DEFAULTS = {"init": "scratch"}


@register("task", "reflow")
class ReflowRun:
    Config = ReflowRunConfig
    record = staticmethod(resolved_record)  # what config.yaml holds, for --resume's run-folder guard

    @staticmethod
    def train(cfg: ReflowRunConfig, out: Path, *, resume: str | None = None) -> Path:
        return train_on_pairs(cfg, out, resume, slim=False)

    @staticmethod
    def load(run, *, device=None):
        """A student run is a generator run: its tokenizer, its backbone under its objective, EMA weights."""
        return GeneratorRun.load(run, device=device)


@register("task", "slimflow")
class SlimFlowRun:
    Config = SlimFlowRunConfig
    record = staticmethod(resolved_record)  # what config.yaml holds, for --resume's run-folder guard

    @staticmethod
    def train(cfg: SlimFlowRunConfig, out: Path, *, resume: str | None = None) -> Path:
        return train_on_pairs(cfg, out, resume, slim=True)

    @staticmethod
    def load(run, *, device=None):
        """A student run is a generator run: its tokenizer, its backbone under its objective, EMA weights."""
        return GeneratorRun.load(run, device=device)
