"""Task ``generator``: a generator trained on the tokens of a frozen tokenizer (the default task).

Tokens are encoded on the fly from the images, or read from a token cache (``data: {name: token-cache}``).
The EMA weights are exported with the tokenizer's own copy (``genlab.pipeline.Pipeline.save``), and a grid with
one row per class is written every ``train.sample_every`` steps and at the end.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.config import ConfigError, RunConfig
from genlab.data.cache import TokenCacheDataset
from genlab.generators.base import Generator
from genlab.pipeline import Pipeline, class_grid, save_grid
from genlab.registry import register
from genlab.tasks.base import fit, training_data
from genlab.tokenizers.base import Tokenizer
from genlab.tokenizers.saved import fingerprint, tokenizer_spec
from genlab.train import Hooks


class GeneratorTraining(nn.Module):
    """``forward(batch) -> generator.loss(tokens, labels, seeds)`` for the trainer, the tokenizer frozen."""

    def __init__(self, tokenizer: Tokenizer, generator: Generator):
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.generator = generator
        self.log_keys = tuple(generator.LOG_KEYS)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch.get("tokens")
        if tokens is None:
            with torch.no_grad():
                tokens = self.tokenizer.encode(batch["image"])
        return self.generator.loss(tokens, batch["label"], batch["seed"])


@register("task", "generator")
class GeneratorRun:
    Config = RunConfig

    @staticmethod
    def train(cfg: RunConfig, out: Path, *, resume: str | None = None) -> Path:
        dataset = training_data(cfg)
        pipe = Pipeline.from_config(cfg, dataset.class_names)
        check_token_cache(dataset, pipe.tokenizer, cfg.tokenizer)  # a cache is only valid for its tokenizer
        model = GeneratorTraining(pipe.tokenizer, pipe.generator)
        s = cfg.sample

        def view(m: GeneratorTraining) -> Pipeline:
            return Pipeline(cfg, m.tokenizer, m.generator, pipe.class_names)

        def sample(m: GeneratorTraining, step: int, run_dir: Path) -> None:
            v = view(m).eval()
            grid = class_grid(v, s.per_class, seed=s.seed, options=s.options)
            path = run_dir / "samples" / f"step_{step:07d}.png"
            save_grid(grid.images, path, nrow=s.per_class, row_labels=pipe.class_names)
            v.train()

        def export(m: GeneratorTraining, run_dir: Path) -> None:
            view(m).save(run_dir)

        return fit(cfg.train, model, dataset, out, Hooks(sample=sample, export=export), cfg.to_dict(), resume)


def check_token_cache(dataset, tokenizer: torch.nn.Module, component) -> None:
    """ConfigError unless ``tokenizer`` (config and weights) is the one that wrote the token cache ``dataset``."""
    if not isinstance(dataset, TokenCacheDataset):
        return
    made = dataset.tokenizer
    spec = tokenizer_spec(tokenizer, component)
    mine = fingerprint(tokenizer, spec)  # hashes every weight: once
    if made["fingerprint"] != mine:
        raise ConfigError(
            f"the token cache {dataset.root} was made by another tokenizer ({made['name']}, fingerprint "
            f"{made['fingerprint'][:12]}) than this run's ({spec['name']}, {mine[:12]}): "
            "set tokenizer.name=run tokenizer.path=<the tokenizer run given to genlab cache>, or re-cache with "
            "`genlab cache --tokenizer ...`"
        )
    shape = list(tokenizer.token_spec.shape)
    if dataset.manifest["token_spec"]["shape"] != shape:  # same weights, built for another resolution
        raise ConfigError(f"the token cache {dataset.root} holds tokens of shape "
                          f"{dataset.manifest['token_spec']['shape']}, this run's tokenizer makes {shape}")  # fmt: skip
    dataset.check_tokens(tokenizer.token_spec)  # every shard's contents, before training reads one
