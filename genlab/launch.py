"""Train a run from a resolved config: dataset, pipeline, task, trainer, hooks.

Two kinds of run: a generator (``RunConfig``) and a FlowTurbo velocity refiner trained against a frozen
generator run (``RefinerRunConfig``, preset ``flowturbo-refiner``), both with the same trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import yaml

from genlab import registry
from genlab.cachecmd import check_token_cache
from genlab.config import ConfigError, RefinerRunConfig, RunConfig
from genlab.data.base import batch_by_index
from genlab.generators.refiner import RefinerTraining, save_refiner
from genlab.pipeline import Pipeline, RunError, class_grid, reconstruction_metrics, save_grid, save_tokenizer
from genlab.train import GeneratorTask, Hooks, TokenizerTask, Trainer


def train_run(cfg: RunConfig | RefinerRunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train ``cfg`` into ``out_dir`` (checkpoints, samples, metrics, exported weights)."""
    if isinstance(cfg, RefinerRunConfig):
        return train_refiner(cfg, out_dir, resume=resume)
    if cfg.task == "tokenizer":
        return train_tokenizer_run(cfg, out_dir, resume=resume)
    out = Path(out_dir)
    dataset = cfg.data.build()
    if len(dataset) < 1:
        raise ConfigError(f"dataset {cfg.data.name} is empty")
    torch.manual_seed(cfg.train.seed)  # the initial weights, the same for every process and every run
    pipe = Pipeline.from_config(cfg, dataset.class_names)
    check_token_cache(dataset, pipe.tokenizer, cfg.tokenizer)  # a cache is only valid for the tokenizer that made it
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

    return _fit(cfg.train, task, dataset, out, Hooks(sample=sample, export=export), cfg.to_dict(), resume)


def _images(dataset, n: int, start: int = 0) -> torch.Tensor:
    """Images ``start .. start + n - 1`` of a dataset (fewer at its end), (n, 3, H, W) in [-1, 1]."""
    return batch_by_index(dataset, torch.arange(start, min(start + n, len(dataset))))["image"]


def fit_latent_stats(tokenizer, dataset, n: int, batch_size: int = 64) -> None:
    """Fit a continuous tokenizer's latent mean/std on the first ``n`` training images (no flips)."""
    n = min(n, len(dataset))
    device = next(tokenizer.parameters()).device
    batches = (_images(dataset, min(batch_size, n - s), s).to(device) for s in range(0, n, batch_size))
    tokenizer.fit_latent_stats(batches, progress=n > 4 * batch_size, total=-(-n // batch_size))
    print(f"latent statistics fitted on {n} images: mean {tokenizer.latent_mean.tolist()}, std "
          f"{tokenizer.latent_std.tolist()}")  # fmt: skip


def train_tokenizer_run(cfg: RunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train the tokenizer itself (``task: tokenizer``): reconstruction grids while training, and at the end
    its weights plus reconstruction metrics (``recon.json``: PSNR, usage, perplexity on the first 512 images).
    A continuous tokenizer with latent statistics (KL-VAE, VA-VAE) has them fitted on its first
    ``tokenizer.stats_images`` training images before its weights are written."""
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
            recon = tok.roundtrip(x).clamp(-1, 1).cpu()
        save_grid(torch.cat([shown, recon]), run_dir / "samples" / f"step_{step:07d}.png", nrow=len(shown))
        tok.train()

    def export(model: TokenizerTask, run_dir: Path) -> None:
        tok = model.tokenizer.eval()
        if hasattr(tok, "fit_latent_stats"):
            fit_latent_stats(tok, dataset, tok.cfg.stats_images)
        save_tokenizer(cfg, tok, run_dir, dataset.class_names)
        metrics = reconstruction_metrics(tok, _images(dataset, 512))
        tok.train()
        (run_dir / "recon.json").write_text(json.dumps(metrics, indent=2))
        print("reconstruction:", json.dumps(metrics))

    return _fit(cfg.train, task, dataset, out, Hooks(sample=sample, export=export), cfg.to_dict(), resume)


def train_refiner(cfg: RefinerRunConfig, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train a FlowTurbo velocity refiner against the frozen generator of ``cfg.base_run`` on that run's data.

    Writes ``out_dir/refiner/{config.json, model.safetensors}`` (EMA weights) and a config.yaml naming the base
    run, so ``genlab sample --run OUT --sampler flowturbo`` samples the base model with this refiner."""
    out, base_dir = Path(out_dir), Path(cfg.base_run)
    try:
        base = Pipeline.load(base_dir)
    except RunError as e:
        raise ConfigError(f"base_run: {e}") from None
    dataset = base.cfg.data.build()
    torch.manual_seed(cfg.train.seed)
    spec = base.tokenizer.token_spec
    rcfg = cfg.refiner.cfg
    if rcfg.patch_size == 0:
        rcfg = dataclasses.replace(rcfg, patch_size=base.cfg.generator.cfg.patch_size)
    try:
        refiner = registry.get("refiner", cfg.refiner.name)(
            rcfg, in_channels=spec.channels, input_size=spec.size, num_classes=len(base.class_names)
        )
    except ValueError as e:
        raise ConfigError(f"refiner: {e}") from None
    task = GeneratorTask(base.tokenizer, RefinerTraining(base.backbone, refiner))
    n_base, n_ref = (sum(p.numel() for p in m.parameters()) for m in (base.backbone, refiner))
    print(f"refiner: {n_ref:,} parameters, {100 * n_ref / n_base:.1f}% of the base model's {n_base:,}")

    def sample(model: GeneratorTask, step: int, run_dir: Path) -> None:
        base.refiner = model.objective.refiner.eval()
        s = base.cfg.sample
        grid = class_grid(base, s.per_class, seed=s.seed, sampler="flowturbo", steps=9, blocks="H1P5R3")
        save_grid(grid.images, run_dir / "samples" / f"step_{step:07d}.png", nrow=s.per_class)
        model.objective.refiner.train()

    def export(model: GeneratorTask, run_dir: Path) -> None:
        save_refiner(model.objective.refiner, run_dir / "refiner")

    data = {**cfg.to_dict(), "base_run": str(base_dir.resolve())}
    return _fit(cfg.train, task, dataset, out, Hooks(sample=sample, export=export), data, resume)


def _fit(train_cfg, task, dataset, out: Path, hooks: Hooks, config_data: dict, resume: str | None) -> Path:
    """Write the resolved config beside the run (main process), then train."""
    trainer = Trainer(train_cfg, task, dataset, out, hooks)
    if trainer.acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config_data, sort_keys=False))
    trainer.fit(resume=resume)
    return out
