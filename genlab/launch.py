"""Train a run from a resolved config: dataset, pipeline, task, trainer, hooks."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from genlab.config import ConfigError, RunConfig
from genlab.pipeline import Pipeline, class_grid, save_grid
from genlab.train import GeneratorTask, Hooks, Trainer


def train_run(cfg: RunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train ``cfg`` into ``out_dir`` (checkpoints, samples, metrics, exported weights)."""
    out = Path(out_dir)
    dataset = cfg.data.build()
    if len(dataset) < 1:
        raise ConfigError(f"dataset {cfg.data.name} is empty")
    torch.manual_seed(cfg.train.seed)  # the initial weights, the same for every process and every run
    pipe = Pipeline.from_config(cfg, dataset.class_names)
    task = GeneratorTask(pipe.tokenizer, pipe.objective)
    s = cfg.sample

    def sample(model: GeneratorTask, step: int, run_dir: Path) -> None:
        view = Pipeline(cfg, model.tokenizer, model.objective, pipe.class_names)
        view.eval()
        grid = class_grid(view, s.per_class, seed=s.seed)
        save_grid(grid.images, run_dir / "samples" / f"step_{step:07d}.png", nrow=s.per_class)
        view.train()

    def export(model: GeneratorTask, run_dir: Path) -> None:
        Pipeline(cfg, model.tokenizer, model.objective, pipe.class_names).save(run_dir)

    trainer = Trainer(cfg.train, task, dataset, out, Hooks(sample=sample, export=export))
    if trainer.acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    trainer.fit(resume=resume)
    return out
