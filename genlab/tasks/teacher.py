"""Teacher runs: a task that learns from another run (a refiner, reflow, CTM, TiTok's teacher codes) names it.

A task's config has a section ``teacher: {run: PATH}`` (``teacher.run=PATH`` on the command line). ``load_teacher``
loads that run frozen through the run store (its exported EMA weights, its own tokenizer, ``eval()``, no
gradients) and refuses it when its files fail to verify: missing or unreadable files and weights that do not fit
their configs (the run store's checks), and, when the config pins ``teacher.sha256`` (every run records it), weights
whose sha256 differs (the checkpoints' hashing, ``genlab.safeio.sha256_file``). ``Teacher.record()`` is what the
new run writes into its config.yaml; a resume against a teacher whose weights changed is then refused by the
run-folder guard, which compares it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from genlab.config import ConfigError
from genlab.pipeline import Pipeline
from genlab.runs.store import COMPONENT_WEIGHTS, RunError, RunFolder, load_tokenizer
from genlab.safeio import CorruptFileError, sha256_file


@dataclass
class TeacherConfig:
    """``teacher:``: the frozen run a task learns from."""

    run: str  # the run directory (written by `genlab train` or `genlab import`) to learn from
    sha256: str = ""  # its weights' sha256 (recorded by the task); when set, a teacher whose weights differ is refused

    @classmethod
    def from_dict(cls, data: Any, key: str = "teacher") -> TeacherConfig:
        if isinstance(data, str):  # `teacher: runs/x`
            data = {"run": data}
        if not isinstance(data, dict):
            raise ConfigError(f"{key}: a mapping {{run: PATH}}, got {data!r}")
        unknown = sorted(set(data) - {"run", "sha256"})
        if unknown:
            raise ConfigError(f"{key}: unknown key {', '.join(unknown)}; valid keys: run, sha256")
        if not data.get("run"):
            raise ConfigError(f"{key}.run: name the run to learn from, e.g. {key}.run=runs/quickstart")
        return cls(run=str(data["run"]), sha256=str(data.get("sha256") or ""))

    def to_dict(self) -> dict:
        return {"run": self.run, **({"sha256": self.sha256} if self.sha256 else {})}


@dataclass
class Teacher:
    """A frozen run: its pipeline (``None`` for a tokenizer run), its tokenizer, where it is and what it hashes to."""

    pipeline: Pipeline | None  # the run as a Pipeline (eval, no gradients); None when the run is a tokenizer run
    tokenizer: nn.Module  # the run's own tokenizer (eval, no gradients)
    path: Path  # the run directory, resolved
    sha256: str  # sha256 of its generator/model.safetensors (tokenizer/model.safetensors for a tokenizer run)

    def record(self) -> dict:
        """The ``teacher`` section the new run writes: the resolved path and the sha256 it was trained against."""
        return {"run": str(self.path), "sha256": self.sha256}

    def check_fits(self, spec: Any, num_classes: int | None = None) -> None:
        """ConfigError unless the teacher makes ``spec``'s tokens (a TokenSpec) and has ``num_classes`` classes."""
        mine = self.tokenizer.token_spec
        if mine != spec:
            raise ConfigError(f"teacher.run: {self.path} makes tokens {mine.describe()}, this run needs "
                              f"{spec.describe()}")  # fmt: skip
        classes = None if self.pipeline is None else len(self.pipeline.class_names)
        if num_classes is not None and classes is not None and classes != num_classes:
            raise ConfigError(f"teacher.run: {self.path} has {classes} classes, this run {num_classes}")


def load_teacher(teacher_cfg: TeacherConfig, *, device: Any = None) -> Teacher:
    """The run ``teacher_cfg.run``, frozen, verified (a one-line ConfigError naming ``teacher.run`` otherwise)."""
    run, part, digest = _verified(teacher_cfg)
    try:
        if part == "tokenizer":
            pipe, tokenizer = None, load_tokenizer(run, device=device)[1]
        else:
            pipe = Pipeline.load(run, device=device)
            pipe.eval().requires_grad_(False)
            tokenizer = pipe.tokenizer
    except (RunError, CorruptFileError) as e:
        raise ConfigError(f"teacher.run: {e}") from None
    tokenizer.eval().requires_grad_(False)
    return Teacher(pipe, tokenizer, run.path.resolve(), digest)


def teacher_record(teacher_cfg: TeacherConfig) -> dict:
    """``load_teacher(teacher_cfg).record()`` without building the run (what the run-folder guard compares)."""
    run, _, digest = _verified(teacher_cfg)
    return {"run": str(run.path.resolve()), "sha256": digest}


def _verified(teacher_cfg: TeacherConfig) -> tuple[RunFolder, str, str]:
    """(the run, its weighed part, the sha256 of that part's weights), checked against ``teacher.sha256``."""
    run = RunFolder(teacher_cfg.run)
    if not run.exists():
        raise ConfigError(f"teacher.run: run directory {run.path} does not exist; train it first (`genlab train`)")
    try:
        part = "tokenizer" if run.task() == "tokenizer" else "generator"
    except RunError as e:
        raise ConfigError(f"teacher.run: {e}") from None
    weights = run.file(f"{part}/{COMPONENT_WEIGHTS}")
    if not weights.is_file():
        raise ConfigError(f"teacher.run: {weights} is missing; finish or resume the run's training "
                          "(`genlab train ... --resume auto`)")  # fmt: skip
    digest = sha256_file(weights)
    if teacher_cfg.sha256 and digest != teacher_cfg.sha256:
        raise ConfigError(f"teacher.run: {weights} changed since this run recorded it (sha256 "
                          f"{teacher_cfg.sha256[:12]}, now {digest[:12]}); restore the teacher, or start a new run "
                          "against this one")  # fmt: skip
    return run, part, digest
