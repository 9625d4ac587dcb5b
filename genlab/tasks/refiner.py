"""Task ``flowturbo-refiner``: a network trained against a frozen generator run — FlowTurbo's velocity refiner.

The template for every "train against a frozen run" task (reflow, CTM and other distillation): its config names
``teacher.run`` (``base_run``, its name before teacher runs, stays accepted); the teacher's pipeline is loaded frozen
and verified (``genlab.tasks.teacher``), the refiner is trained on the teacher's data, and its weights are written
in a folder of their own (``refiner/``), so that ``genlab sample --run OUT`` loads the teacher with them attached.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genlab import registry
from genlab.config import Component, ConfigError, TrainConfig, component_from_dict, from_dict, to_dict
from genlab.generators.refiner import RefinerTraining, VelocityRefiner
from genlab.pipeline import Pipeline, class_grid, save_grid
from genlab.registry import register
from genlab.runs.store import RunError, RunFolder
from genlab.tasks.base import fit, init_from
from genlab.tasks.generator import GeneratorTraining
from genlab.tasks.teacher import TeacherConfig, load_teacher, teacher_record
from genlab.train import Hooks


@dataclass
class RefinerRunConfig:
    """``task: flowturbo-refiner``: a FlowTurbo velocity refiner trained against a frozen generator run."""

    teacher: TeacherConfig  # the flow generator run whose velocity the refiner corrects (``base_run``: an alias)
    refiner: Component  # a registered refiner and its config
    train: TrainConfig = field(default_factory=TrainConfig)
    task: str = "flowturbo-refiner"
    preset: str = ""  # the preset this config came from (informational)

    @classmethod
    def from_dict(cls, data: dict) -> RefinerRunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a refiner run config is a mapping of sections, got {data!r}")
        valid = ["task", "teacher", "base_run", "refiner", "train", "preset"]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key {', '.join(unknown)}; valid sections: {', '.join(valid)}")
        teacher = data.get("teacher") or {}
        if data.get("base_run"):  # the name of teacher.run before teacher runs; given, it wins over the preset's
            teacher = {**(teacher if isinstance(teacher, dict) else {}), "run": data["base_run"]}
        if not teacher:
            raise ConfigError("teacher.run: name the generator run to refine, e.g. teacher.run=runs/quickstart")
        return cls(
            teacher=TeacherConfig.from_dict(teacher),
            refiner=component_from_dict("refiner", data.get("refiner") or {"name": "flowturbo"}, "refiner"),
            train=from_dict(TrainConfig, data.get("train"), "train"),
            preset=str(data.get("preset", "")),
        )

    def to_dict(self) -> dict:
        return {"task": self.task, "teacher": self.teacher.to_dict(), "refiner": to_dict(self.refiner),
                "train": to_dict(self.train), "preset": self.preset}  # fmt: skip


@register("task", "flowturbo-refiner")
class RefinerRun:
    Config = RefinerRunConfig

    @staticmethod
    def record(cfg: RefinerRunConfig) -> dict:
        """The config.yaml ``train`` writes: the teacher's resolved path and sha256 in place of what was given."""
        return {**cfg.to_dict(), "teacher": teacher_record(cfg.teacher)}

    @staticmethod
    def train(cfg: RefinerRunConfig, out: Path, *, resume: str | None = None) -> Path:
        """Writes ``out/refiner/{config.json, model.safetensors}`` (EMA weights) and a config.yaml naming the
        teacher run and its sha256, so ``genlab sample --run OUT --sampler flowturbo`` samples the teacher with
        this refiner."""
        teacher = load_teacher(cfg.teacher)
        base = teacher.pipeline
        if base is None or not hasattr(base.generator, "attach"):
            raise ConfigError(f"teacher.run: {teacher.path} is not a flow model; a FlowTurbo refiner refines flow "
                              "models")  # fmt: skip
        dataset = base.cfg.data.build()
        torch.manual_seed(cfg.train.seed)
        spec = base.tokenizer.token_spec
        rcfg = cfg.refiner.cfg
        if rcfg.patch_size == 0:
            rcfg = dataclasses.replace(rcfg, patch_size=base.cfg.generator.cfg.patch_size)
        try:
            refiner = registry.get("refiner", cfg.refiner.name)(rcfg, spec=spec, num_classes=len(base.class_names))
        except ValueError as e:
            raise ConfigError(f"refiner: {e}") from None
        init_from(cfg.train, {"refiner": refiner})
        model = GeneratorTraining(base.tokenizer, RefinerTraining(base.weights, refiner))
        n_base, n_ref = (sum(p.numel() for p in m.parameters()) for m in (base.weights, refiner))
        print(f"refiner: {n_ref:,} parameters, {100 * n_ref / n_base:.1f}% of the base model's {n_base:,}")
        preview = {"sampler": "flowturbo", "steps": 9, "blocks": "H1P5R3"}

        def sample(m: GeneratorTraining, step: int, run_dir: Path) -> None:
            base.generator.attach("refiner", m.generator.refiner.eval())
            s = base.cfg.sample
            grid = class_grid(base, s.per_class, seed=s.seed, options=preview)
            path = run_dir / "samples" / f"step_{step:07d}.png"
            save_grid(grid.images, path, nrow=s.per_class, row_labels=base.class_names)
            m.generator.refiner.train()

        def export(m: GeneratorTraining, run_dir: Path) -> None:
            ref = m.generator.refiner
            RunFolder(run_dir).write_component("refiner", ref.saved_config(), ref)

        data = {**cfg.to_dict(), "teacher": teacher.record()}
        return fit(cfg.train, model, dataset, out, Hooks(sample=sample, export=export), data, resume)

    @staticmethod
    def load(run: RunFolder, *, device=None) -> Pipeline:
        """The base run, with this run's refiner attached."""
        pipe = Pipeline.load(_refiner_base(run), device=device)
        attach_refiner(pipe, run)
        return pipe


def attach_refiner(pipe: Pipeline, refiner_run: Path | str | RunFolder) -> Pipeline:
    """Hand the velocity refiner of a FlowTurbo refiner run (``genlab train --preset flowturbo-refiner``) to
    ``pipe``'s flow model (``generator.attach("refiner", ...)``); ``genlab sample --refiner DIR`` calls it."""
    run = refiner_run if isinstance(refiner_run, RunFolder) else RunFolder(refiner_run)
    if not run.has_component("refiner"):
        raise RunError(
            f"{run.path} has no trained refiner ({run.path}/refiner/model.safetensors); "
            "train one with `genlab train --preset flowturbo-refiner teacher.run=RUN --out DIR`"
        )
    if not hasattr(pipe.generator, "attach"):
        raise RunError(f"a FlowTurbo refiner refines a flow model; {pipe.cfg.generator.name} is not one")
    saved = run.read_component_config("refiner")
    try:
        ref = VelocityRefiner.from_saved(saved)
    except ValueError as e:
        raise RunError(f"{run.path}/refiner/config.json: {e}") from None
    run.load_weights("refiner", ref).eval()
    if ref.spec != pipe.tokenizer.token_spec or ref.num_classes != len(pipe.class_names):
        raise RunError(f"the refiner in {run.path} was trained for another model (tokens or classes differ)")
    device = next(pipe.weights.parameters()).device
    pipe.generator.attach("refiner", ref.to(device))
    return pipe


def _refiner_base(run: RunFolder) -> Path:
    """The base run of a FlowTurbo refiner run (relative paths are tried from the cwd, then from the run)."""
    data = run.read_config_dict()
    teacher = data.get("teacher") if isinstance(data.get("teacher"), dict) else {}
    base = Path(str(data.get("base_run") or teacher.get("run", "")))  # runs written before teacher runs: base_run
    if not base.is_absolute() and not base.is_dir() and (run.path / base).is_dir():
        base = run.path / base
    return base
