"""Train a run from a resolved config: dataset, pipeline, task, trainer, hooks."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from genlab.config import ConfigError, RunConfig
from genlab.pipeline import Pipeline, class_grid, reconstruction_metrics, save_grid, save_tokenizer
from genlab.train import GeneratorTask, Hooks, TokenizerTask, Trainer


def train_run(cfg: RunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train ``cfg`` into ``out_dir`` (checkpoints, samples, metrics, exported weights)."""
    if cfg.task == "tokenizer":
        return train_tokenizer_run(cfg, out_dir, resume=resume)
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


def _images(dataset, n: int) -> torch.Tensor:
    """The first ``n`` images of a dataset, (n, 3, H, W) in [-1, 1]."""
    idx = torch.arange(min(n, len(dataset)))
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)["image"]
    return torch.stack([dataset[int(i)]["image"] for i in idx])


def train_tokenizer_run(cfg: RunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train the tokenizer itself (``task: tokenizer``): reconstruction grids while training, and at the end
    its weights plus reconstruction metrics (``recon.json``: PSNR, usage, perplexity on the first 512 images)."""
    import json

    out = Path(out_dir)
    dataset = cfg.data.build()
    if len(dataset) < 1:
        raise ConfigError(f"dataset {cfg.data.name} is empty")
    torch.manual_seed(cfg.train.seed)
    tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
    task = TokenizerTask(tokenizer)
    shown = _images(dataset, cfg.sample.per_class)

    def sample(model: TokenizerTask, step: int, run_dir: Path) -> None:
        tok = model.tokenizer.eval()
        with torch.no_grad():
            x = shown.to(next(tok.parameters()).device)
            recon = tok.decode(tok.encode(x)).clamp(-1, 1).cpu()
        save_grid(torch.cat([shown, recon]), run_dir / "samples" / f"step_{step:07d}.png", nrow=len(shown))
        tok.train()

    def export(model: TokenizerTask, run_dir: Path) -> None:
        save_tokenizer(cfg, model.tokenizer, run_dir, dataset.class_names)
        tok = model.tokenizer.eval()
        metrics = reconstruction_metrics(tok, _images(dataset, 512))
        tok.train()
        (run_dir / "recon.json").write_text(json.dumps(metrics, indent=2))
        print("reconstruction:", json.dumps(metrics))

    trainer = Trainer(cfg.train, task, dataset, out, Hooks(sample=sample, export=export))
    if trainer.acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    trainer.fit(resume=resume)
    return out
