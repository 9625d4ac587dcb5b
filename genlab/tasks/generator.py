"""Task ``generator``: a generator trained on the tokens of a frozen tokenizer (the default task).

Tokens are encoded on the fly from the images, or read from a token cache (``data: {name: token-cache}``).
The EMA weights are exported with the tokenizer's own copy (``genlab.pipeline.Pipeline.save``), and a grid with
one row per class (or per one of ``sample.grid_classes`` fixed classes) is written every ``train.sample_every``
steps and at the end, its images shared over the training processes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from genlab.config import ConfigError, RunConfig
from genlab.data.cache import TokenCacheDataset
from genlab.generators.base import Generator, GeneratorError
from genlab.pipeline import Pipeline, grid_classes, save_grid
from genlab.registry import register
from genlab.runs.store import RunFolder
from genlab.tasks.base import fit, init_from, training_data
from genlab.tokenizers.base import Tokenizer, check_lengths
from genlab.tokenizers.saved import fingerprint, tokenizer_spec
from genlab.train import Hooks, dist


class GeneratorTraining(nn.Module):
    """``forward(batch) -> generator.loss(tokens, labels, seeds)`` for the trainer, the tokenizer frozen."""

    def __init__(self, tokenizer: Tokenizer, generator: Generator):
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.generator = generator
        self.log_keys = tuple(generator.LOG_KEYS)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens, lengths = batch.get("tokens"), batch.get("lengths")
        if tokens is None:
            with torch.no_grad():
                enc = self.tokenizer.encode_batch(batch["image"])
            tokens, lengths = enc.tokens, enc.lengths
        if lengths is None:  # every family of round 2: the call it always had
            return self.generator.loss(tokens, batch["label"], batch["seed"])
        if not self.generator.TAKES_LENGTHS:
            raise GeneratorError(
                f"{type(self.generator).__name__} does not train on per-sample token lengths, which these tokens "
                "carry (choose a generator with TAKES_LENGTHS, or tokens without lengths)"
            )
        check_lengths(self.tokenizer.token_spec, lengths, len(batch["label"]))
        return self.generator.loss(tokens, batch["label"], batch["seed"], lengths=lengths)


@register("task", "generator")
class GeneratorRun:
    Config = RunConfig

    @staticmethod
    def train(cfg: RunConfig, out: Path, *, resume: str | None = None) -> Path:
        dataset = training_data(cfg)
        pipe = Pipeline.from_config(cfg, dataset.class_names)
        check_token_cache(dataset, pipe.tokenizer, cfg.tokenizer)  # a cache is only valid for its tokenizer
        init_from(cfg.train, {"generator": pipe.weights})
        model = GeneratorTraining(pipe.tokenizer, pipe.generator)
        s = cfg.sample

        def view(m: GeneratorTraining) -> Pipeline:
            return Pipeline(cfg, m.tokenizer, m.generator, pipe.class_names)

        rows = grid_classes(len(pipe.class_names), s.grid_classes)
        labels = [c for c in rows for _ in range(s.per_class)]

        def sample(m: GeneratorTraining, step: int, run_dir: Path) -> None:
            """Every process generates its share of the grid (image i from seed + i), the main one writes it."""
            v = view(m).eval()
            mine = dist.share(len(labels))
            images = v.generate(labels[mine.start : mine.stop], seed=s.seed + mine.start, options=s.options).images
            images = dist.gather_shares(images, len(labels))
            if images is not None:
                path = run_dir / "samples" / f"step_{step:07d}.png"
                save_grid(images, path, nrow=s.per_class, row_labels=[pipe.class_names[c] for c in rows])
            v.train()

        def export(m: GeneratorTraining, run_dir: Path) -> None:
            view(m).save(run_dir)

        hooks = Hooks(sample=sample, export=export, sample_on_every_process=True)
        return fit(cfg.train, model, dataset, out, hooks, cfg.to_dict(), resume)

    @staticmethod
    def load(run: RunFolder, *, device=None) -> Pipeline:
        """The run's tokenizer, its generator rebuilt from generator/config.json with its EMA weights."""
        parts = run.assemble()
        pipe = Pipeline.from_config(parts.cfg, parts.class_names, tokenizer=parts.tokenizer)
        run.load_weights("generator", pipe.weights)
        return pipe.to(device or "cpu").eval()


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
