"""What every task shares: the trainer call that writes the run's config first, and image helpers."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab.config import ConfigError
from genlab.data.base import batch_by_index
from genlab.runs.store import RunFolder
from genlab.train import Hooks, Trainer
from genlab.train.runfolder_guard import check_run_folder


def fit(train_cfg, model, dataset, out: Path, hooks: Hooks, config_data: dict, resume: str | None) -> Path:
    """Check the config against the run already in ``out``, train ``model`` (``forward(batch)``), and write the
    resolved config beside the run once a resume, if any, has loaded (a failed resume leaves the folder as it was)."""
    if getattr(train_cfg, "init_from", "") and not getattr(model, "initialised_from", ""):
        raise ConfigError("train.init_from: this task does not start from another run's weights (task titok does)")
    check_run_folder(out, config_data, resume=resume)
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
