"""Task ``ctm``: a consistency trajectory model (Kim et al., ICLR 2024) distilled from a frozen flow teacher run.

The student is the ``ctm`` objective (``genlab.generators.objectives.ctm``) on the teacher's backbone with a second
time input (requested by the objective through ``backbone_overrides``), initialised from the teacher (its s
embedding starts at zero, so step 0 is the teacher's one-step Euler jump). It trains on the teacher run's own data
(encoded on the fly by the teacher's tokenizer) with CTM's soft consistency matching against the teacher's Heun
solver and the DSM term; the target network G_sg is an EMA of the student (``objective.target_decay``) updated
once per optimizer step, kept in the checkpoints. CTM's GAN term is not implemented. ``genlab sample --run OUT
--steps N --gamma G`` samples the new run with γ-sampling.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from genlab.config import ConfigError
from genlab.generators.objectives.ctm import ConsistencyTrajectory
from genlab.registry import register
from genlab.tasks.base import fit
from genlab.tasks.fewstep import FewStepRunConfig, _load_teacher, build_student, preview
from genlab.tasks.generator import GeneratorRun, GeneratorTraining
from genlab.train import Hooks


@dataclass
class CTMConfig:
    init: Literal["teacher", "scratch"] = "teacher"  # the student's initial weights


class CTMTraining(GeneratorTraining):
    """The CTM objective's loss on the teacher run's tokens; the frozen teacher and the EMA target as submodules
    (moved to the device and checkpointed with the model, never optimized)."""

    def __init__(self, tokenizer: nn.Module, student: ConsistencyTrajectory, teacher: nn.Module):
        super().__init__(tokenizer, student)
        self.teacher = teacher.eval().requires_grad_(False)
        self.target = copy.deepcopy(student.backbone).requires_grad_(False)
        student.attach("teacher", self.teacher)
        student.attach("target", self.target)

    def set_step(self, step: int) -> None:
        if step > 0:
            self.generator.update_target()  # after each optimizer step (the trainer calls this before the next)


@dataclass
class CTMRunConfig(FewStepRunConfig):
    """``task: ctm``: a CTM student of a frozen flow teacher run."""

    ctm: CTMConfig = field(default_factory=CTMConfig)
    METHOD = "ctm"
    SECTION = CTMConfig
    DEFAULT_OBJECTIVE = {"name": "ctm"}


@register("task", "ctm")
class CTMRun:
    Config = CTMRunConfig

    @staticmethod
    def load(run, *, device=None):
        """A student run is a generator run: its tokenizer, its backbone under its objective, EMA weights."""
        return GeneratorRun.load(run, device=device)

    @staticmethod
    def train(cfg: CTMRunConfig, out: Path, *, resume: str | None = None) -> Path:
        teacher = _load_teacher(cfg.teacher)
        cfg = cfg.resolve(teacher)
        student = build_student(cfg, teacher, init=cfg.ctm.init)
        if not isinstance(student.generator, ConsistencyTrajectory):
            raise ConfigError(f"objective: a ctm run trains objective ctm, not {cfg.objective.name}")
        dataset = cfg.data.build()
        if len(dataset) < 1:
            raise ConfigError(f"dataset {cfg.data.name} (the teacher's) is empty")
        model = CTMTraining(student.tokenizer, student.generator, teacher.pipeline.weights)
        n = sum(p.numel() for p in student.weights.parameters())
        print(f"ctm: student {n:,} parameters, init {cfg.ctm.init}, teacher {teacher.path} ({teacher.sha256[:12]})")
        hooks = Hooks(sample=preview(student, cfg.sample.options), export=lambda m, run_dir: student.save(run_dir))
        return fit(cfg.train, model, dataset, out, hooks, cfg.to_dict(), resume)
