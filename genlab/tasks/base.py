"""The task protocol, and what every task shares: the trainer call that writes the run's config, image helpers.

A task (``@register("task", NAME)``) owns its runs: its ``Config`` is the schema of their config.yaml, ``train``
writes one, ``load`` turns one back into a ``Pipeline`` (``Pipeline.load`` asks the task the run's config.yaml
names). Tasks sit above the pipeline in the import direction: they import ``genlab.pipeline``; the pipeline finds
a task by name in the registry, never by import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from genlab.config import ConfigError
from genlab.data.base import batch_by_index
from genlab.pipeline import Pipeline
from genlab.runs.store import RunError, RunFolder
from genlab.train import Hooks, Trainer


class Task(Protocol):
    """What ``@register("task", NAME)`` registers (a class of static methods)."""

    Config: type  # the run config's schema: ``Config.from_dict(dict)`` (ConfigError when bad) and ``to_dict()``

    @staticmethod
    def train(cfg: Any, out: Path, *, resume: str | None = None) -> Path:
        """Train ``cfg`` into the run folder ``out`` (config.yaml, checkpoints, samples, exported weights)."""

    @staticmethod
    def load(run: RunFolder, *, device: Any = None) -> Pipeline:
        """The finished run ``run`` as a Pipeline on ``device``, in eval mode; a one-line RunError otherwise."""

    # optional: ``attach(pipe, run)`` hands a part of ``run`` (a refiner) to another run's pipeline


def not_sampleable(run: RunFolder, what: str) -> RunError:
    """The error of a task whose runs have no generator (a tokenizer run)."""
    return RunError(f"{run.path} is a {what} run: it has no generator to sample (train one on it)")


def init_from(train_cfg: Any, parts: dict[str, nn.Module]) -> None:
    """``train.init_from: RUN`` or ``RUN:component``: load that run's exported weights of the component (default:
    the first of ``parts``, what this task trains) strictly into ``parts[component]``. A later stage of a recipe
    starts from an earlier one this way; the optimizer, step and RNG start afresh (``--resume`` is the other way)."""
    spec = train_cfg.init_from
    if not spec:
        return
    path, sep, part = spec.rpartition(":")
    if not sep or not part or "/" in part:  # no component named (or a ':' inside the path)
        path, part = spec, next(iter(parts))
    if part not in parts:
        raise ConfigError(f"train.init_from: this task starts its {' or '.join(parts)} from another run, not a {part}")
    run = RunFolder(path)
    if not run.exists():
        raise ConfigError(f"train.init_from: run directory {run.path} does not exist")
    if not run.has_component(part):
        held = [p.name for p in sorted(run.path.iterdir()) if run.has_component(p.name)]
        raise ConfigError(f"train.init_from: {run.path} has no {part} ({run.path}/{part}/model.safetensors); it has "
                          f"{', '.join(held) or 'no exported component'}")  # fmt: skip
    try:
        run.load_weights(part, parts[part])
    except RunError as e:
        raise ConfigError(f"train.init_from: {e}") from None
    print(f"train.init_from: {part} weights from {run.path}")


def fit(train_cfg, model, dataset, out: Path, hooks: Hooks, config_data: dict, resume: str | None) -> Path:
    """Train ``model`` (``forward(batch)``) into ``out`` and write the resolved config beside the run once a
    resume, if any, has loaded (a failed resume leaves the folder as it was). ``genlab.tasks.train_run`` has
    checked ``config_data`` against the run already in ``out`` (the run-folder guard) before the task began."""
    trainer = Trainer(train_cfg, model, dataset, out, hooks)
    trainer.fit(resume=resume, on_start=lambda: RunFolder(out).write_config(config_data))
    return out


def training_data(cfg):
    """The run's dataset (a ConfigError when it is empty), with torch's seed set from ``train.seed``, so the initial
    weights built next are the same for every process and every run."""
    dataset = cfg.data.build()
    if len(dataset) < 1:
        raise ConfigError(f"dataset {cfg.data.name} is empty")
    torch.manual_seed(cfg.train.seed)
    return dataset


def first_images(dataset, n: int, start: int = 0) -> torch.Tensor:
    """Images ``start .. start + n - 1`` of a dataset (fewer at its end), (n, 3, H, W) in [-1, 1]."""
    return batch_by_index(dataset, torch.arange(start, min(start + n, len(dataset))))["image"]
