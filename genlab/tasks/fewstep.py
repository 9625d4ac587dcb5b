"""What the few-step tasks (``reflow``, ``slimflow``, ``ctm``) share: a frozen teacher run, a student run config
resolved from it, the student's initialisation from the teacher, and the perceptual distance of LPIPS premetrics.

A few-step run config names its teacher (``teacher: {run: PATH}``, ``teacher.run=PATH`` on the command line) and
may give the student's ``generator``, ``objective`` and ``sample`` sections; the rest comes from the teacher run:
the student makes the teacher's tokens (its ``data`` and ``tokenizer``), and, unless given, has the teacher's
backbone. The resolved config, written as the new run's config.yaml, holds every section plus the teacher's path and
sha256, so ``genlab sample --run OUT`` (``Pipeline.load``) reads the new run like any generator run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.config import (
    Component,
    ConfigError,
    SampleSection,
    TrainConfig,
    component_from_dict,
    from_dict,
    sample_options_class,
    to_dict,
)  # fmt: skip
from genlab.generators.objectives.flow import RectifiedFlow
from genlab.pipeline import Pipeline, class_grid, save_grid
from genlab.tasks import teacher
from genlab.tasks.teacher import load_teacher

STUDENT_SECTIONS = {"data": "dataset", "tokenizer": "tokenizer", "generator": "generator", "objective": "objective"}


# ----------------------------------------------------------------------------- the teacher


@dataclass
class TeacherConfig:
    run: str = ""  # the frozen flow run the student learns from (a `genlab train` run directory)
    sha256: str = ""  # recorded when the run is made: sha256 of the teacher's generator/model.safetensors


@dataclass
class Teacher:
    pipeline: Pipeline  # the teacher run, EMA weights, eval mode, no gradients
    path: Path
    sha256: str

    def check_fits(self, spec, num_classes: int) -> None:
        """ConfigError unless tokens of ``spec`` and ``num_classes`` classes are the teacher's."""
        mine = self.pipeline.tokenizer.token_spec
        if tuple(spec.shape) != tuple(mine.shape) or spec.kind != mine.kind:
            raise ConfigError(f"teacher.run: {self.path} makes {mine.kind} tokens {tuple(mine.shape)}, "
                              f"not {spec.kind} {tuple(spec.shape)}")  # fmt: skip
        if num_classes != len(self.pipeline.class_names):
            raise ConfigError(f"teacher.run: {self.path} has {len(self.pipeline.class_names)} classes, not "
                              f"{num_classes}")  # fmt: skip


def _load_teacher(cfg: TeacherConfig, *, device=None) -> Teacher:
    """The frozen flow run ``cfg.run``, loaded and verified by the one teacher mechanism
    (``genlab.tasks.teacher.load_teacher``: eval, no gradients, a recorded sha256 enforced), checked to be a flow run."""
    if not cfg.run:
        raise ConfigError("teacher.run: name the flow run to learn from, e.g. teacher.run=runs/smoke")
    frozen = load_teacher(teacher.TeacherConfig(run=cfg.run, sha256=cfg.sha256), device=device)
    if frozen.pipeline is None or not isinstance(frozen.pipeline.generator, RectifiedFlow):
        raise ConfigError(f"teacher.run: {cfg.run} is not a flow run (objective flow or rfpp); few-step methods "
                          "distil flow models")  # fmt: skip
    return Teacher(frozen.pipeline, Path(cfg.run), frozen.sha256)


# ----------------------------------------------------------------------------- the run config


@dataclass
class FewStepRunConfig:
    """A student trained against a frozen teacher run; subclasses add their method's section (``METHOD``)."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: str = ""
    preset: str = ""  # the preset this config came from (informational)
    data: Component | None = None  # resolved: the teacher's
    tokenizer: Component | None = None  # resolved: the teacher's
    generator: Component | None = None  # the student's backbone (default: the teacher's)
    objective: Component | None = None  # the student's objective (default: DEFAULT_OBJECTIVE)
    sample: SampleSection | None = None  # the student's sampling defaults, once the objective is known
    sample_given: dict = field(default_factory=dict)  # the sample section as written, until then

    METHOD: ClassVar[str] = ""
    SECTION: ClassVar[type] = object
    SECTION_DEFAULTS: ClassVar[dict] = {}  # the method section's defaults that differ from SECTION's
    DEFAULT_OBJECTIVE: ClassVar[dict] = {"name": "rfpp"}

    @property
    def method(self) -> Any:
        return getattr(self, self.METHOD)

    @classmethod
    def from_dict(cls, data: dict) -> FewStepRunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a {cls.METHOD} run config is a mapping of sections, got {data!r}")
        valid = ["task", "preset", "teacher", "train", cls.METHOD, *STUDENT_SECTIONS, "sample"]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key {', '.join(unknown)}; valid sections: {', '.join(valid)}")
        parts = {s: component_from_dict(kind, data[s], s) for s, kind in STUDENT_SECTIONS.items()
                 if data.get(s) is not None}  # fmt: skip
        given = data.get("sample") or {}
        if not isinstance(given, dict):
            raise ConfigError(f"sample: expected a mapping of keys, got {given!r}")
        cfg = cls(
            teacher=from_dict(TeacherConfig, data.get("teacher"), "teacher"),
            train=from_dict(TrainConfig, data.get("train"), "train"),
            task=cls.METHOD, preset=str(data.get("preset", "")), sample_given=dict(given), **parts,
        )  # fmt: skip
        section = data.get(cls.METHOD) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{cls.METHOD}: expected a mapping of keys, got {section!r}")
        setattr(cfg, cls.METHOD, from_dict(cls.SECTION, {**cls.SECTION_DEFAULTS, **section}, cls.METHOD))
        objective = cfg.objective or component_from_dict("objective", cls.DEFAULT_OBJECTIVE, "objective")
        if cfg.generator is not None:
            cfg.sample = SampleSection.from_dict(given, sample_options_class(cfg.generator, objective))
        return cfg

    def to_dict(self) -> dict:
        out = {"task": self.task, "preset": self.preset, "teacher": to_dict(self.teacher),
               self.METHOD: to_dict(self.method), "train": to_dict(self.train)}  # fmt: skip
        for s in STUDENT_SECTIONS:
            if getattr(self, s) is not None:
                out[s] = to_dict(getattr(self, s))
        out["sample"] = self.sample.to_dict() if self.sample is not None else dict(self.sample_given)
        return out

    def resolve(self, teacher: Teacher) -> FewStepRunConfig:
        """This config with every student section filled in from the teacher run and the teacher recorded."""
        tcfg = teacher.pipeline.cfg
        for s in ("data", "tokenizer"):
            if getattr(self, s) is not None and to_dict(getattr(self, s)) != to_dict(getattr(tcfg, s)):
                raise ConfigError(f"{s}: the student makes the teacher's tokens; remove the {s} section (it is "
                                  f"{teacher.path}'s)")  # fmt: skip
        if self.teacher.sha256 and self.teacher.sha256 != teacher.sha256:
            raise ConfigError(f"teacher.run: {teacher.path}'s weights changed since this run was made (sha256 "
                              f"{teacher.sha256[:12]}, recorded {self.teacher.sha256[:12]})")  # fmt: skip
        generator = self.generator or tcfg.generator
        objective = self.objective or component_from_dict("objective", self.DEFAULT_OBJECTIVE, "objective")
        given = {"per_class": tcfg.sample.per_class, **self.sample_given}
        sample = SampleSection.from_dict(given, sample_options_class(generator, objective))
        rec = TeacherConfig(run=str(teacher.path.resolve()), sha256=teacher.sha256)
        out = replace(self, teacher=rec, data=tcfg.data, tokenizer=tcfg.tokenizer, generator=generator,
                      objective=objective, sample=sample)  # fmt: skip
        setattr(out, self.METHOD, self.method)
        return out


def resolved_record(cfg: FewStepRunConfig) -> dict:
    """The config.yaml a few-step run writes (resolved from its teacher run): the ``record`` of the few-step tasks,
    which the run-folder guard compares a ``--resume`` with (the preset alone lacks the teacher's sections)."""
    return cfg.resolve(_load_teacher(cfg.teacher)).to_dict()


# ----------------------------------------------------------------------------- the student


def build_student(cfg: FewStepRunConfig, teacher: Teacher, *, init: str = "teacher") -> Pipeline:
    """The student pipeline (the teacher's tokenizer, the resolved generator/objective), its backbone initialised
    from the teacher's (``init: teacher``; a second time input added by its objective starts at zero) or not."""
    tp = teacher.pipeline
    torch.manual_seed(cfg.train.seed)
    student = Pipeline.from_config(cfg, tp.class_names, tokenizer=tp.tokenizer)
    if init == "teacher":
        init_from(student.weights, tp.weights, teacher.path)
    return student


def init_from(student: nn.Module, teacher: nn.Module, where: Path) -> None:
    """Copy the teacher's weights into the student; only the student's s embedding (CTM) may be new."""
    state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    mine = student.state_dict()
    bad = [k for k, v in state.items() if k not in mine or mine[k].shape != v.shape]
    missing = [k for k in mine if k not in state and not k.startswith("s_embedder.")]
    if bad or missing:
        raise ConfigError(
            f"the student's generator section differs from {where}'s ({(bad + missing)[0]} does not fit): give the "
            "teacher's generator section, or train the student from scratch (init: scratch)"
        )
    student.load_state_dict(state, strict=False)


class PerceptualDistance(nn.Module):
    """d(x̂, x) per sample on decoded images: the tokenizer's decode, bilinear resize to ``resize`` (rfpp: 224),
    genlab's perceptual network (LPIPS-VGG from a local file, or the offline Inception fallback; ``auto`` says which
    in the log). The tokenizer and the network are frozen; gradients flow to x̂."""

    def __init__(self, tokenizer: nn.Module, kind: str, lpips_path: str = "", resize: int = 224):
        super().__init__()
        from genlab.tokenizers.losses import LossConfig, build_perceptual

        self.tokenizer, self.resize = tokenizer, resize
        self.net = build_perceptual(LossConfig(perceptual=kind, lpips_path=lpips_path)).eval().requires_grad_(False)

    def forward(self, x_hat: Tensor, x0: Tensor) -> Tensor:
        imgs = [self.tokenizer.decode(x) for x in (x_hat, x0)]  # (B, 3, H, W) each
        if self.resize and imgs[0].shape[-1] != self.resize:
            imgs = [nn.functional.interpolate(x, size=self.resize, mode="bilinear", align_corners=False) for x in imgs]
        d = self.net(imgs[0].float(), imgs[1].float())
        return d.flatten(1).mean(1) if d.ndim > 1 else d.expand(len(x_hat)) if d.ndim == 0 else d


def preview(student: Pipeline, options: Any) -> Any:
    """The periodic sample grid hook of a student pipeline (one row per class)."""

    def sample(m: nn.Module, step: int, run_dir: Path) -> None:
        s = student.cfg.sample
        was = student.training
        student.eval()
        grid = class_grid(student, s.per_class, seed=s.seed, options=options)
        save_grid(grid.images, run_dir / "samples" / f"step_{step:07d}.png", nrow=s.per_class,
                  row_labels=student.class_names)  # fmt: skip
        student.train(was)

    return sample
