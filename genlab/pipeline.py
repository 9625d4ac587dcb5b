"""A trained run as one object: tokenizer + generator + class names + sampling defaults.

``Pipeline.from_config`` builds a fresh one (for training or counting parameters), ``Pipeline.load(run_dir)``
a trained one from ``runs/NAME/`` (the folder layout: ``genlab.runs.store``). Nothing here knows a generator
family: the generator is whatever ``build_generator`` makes of the config (a backbone under its objective, or a
self-contained model), sampled through its ``SampleOptions``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genlab import registry
from genlab.config import Component, ConfigError, RunConfig, coerce, to_dict
from genlab.generators.base import Generator, SampleOptions, build_generator
from genlab.grids import save_grid
from genlab.runs.limits import check_build
from genlab.runs.store import RunError, RunFolder, load_tokenizer, save_tokenizer, spec_from_dict, spec_to_dict
from genlab.tokenizers.base import Tokenizer
from genlab.tokenizers.saved import fingerprint, tokenizer_spec

# load_tokenizer, save_tokenizer, spec_from_dict and spec_to_dict live in the run store (re-exported here)
__all__ = ["Generated", "Pipeline", "RunError", "class_grid", "load_tokenizer", "save_grid", "save_tokenizer",
           "spec_from_dict", "spec_to_dict"]  # fmt: skip

PRECISIONS = ("fp32", "bf16")  # Pipeline.generate(precision=...): the networks' compute dtype when sampling


def run_task(run: RunFolder) -> Any:
    """The registered task that made ``run`` (by name: the tasks import this module, not the reverse)."""
    try:
        return registry.get("task", run.task())
    except registry.RegistryError as e:
        raise RunError(f"{run.path}/config.yaml: task: {e}") from None


def dataset_info(cfg: RunConfig) -> tuple[int, int]:
    """(resolution, num_classes) of the configured dataset, without loading it."""
    cls = registry.get("dataset", cfg.data.name)
    return cfg.data.cfg.resolution, cls.num_classes(cfg.data.cfg)


@dataclass
class Generated:
    images: Tensor  # (B, 3, H, W) float in [-1, 1]
    labels: Tensor  # (B,)
    nfe: int  # evaluations per image of the main network
    seconds: float
    nfe_by_network: dict[str, int] = dataclasses.field(default_factory=dict)  # every network's, main first
    options: SampleOptions | None = None  # the options used

    def extra_networks(self) -> dict[str, int]:
        """The evaluations per image of the networks besides the main one (FlowTurbo's refiner)."""
        return dict(list(self.nfe_by_network.items())[1:])


class Pipeline(nn.Module):
    def __init__(self, cfg: RunConfig, tokenizer: Tokenizer, generator: Generator, class_names: list[str]):
        super().__init__()
        self.cfg, self.tokenizer, self.generator = cfg, tokenizer, generator
        self.class_names = list(class_names)

    @classmethod
    def from_config(cls, cfg: RunConfig, class_names: list[str] | None = None, *, device=None,
                    tokenizer: Tokenizer | None = None) -> Pipeline:  # fmt: skip
        resolution, num_classes = dataset_info(cfg)
        if class_names is not None:
            num_classes = len(class_names)
        real = torch.device(device or "cpu").type != "meta"  # counted on the meta device first (runs/limits.py)
        tok = tokenizer
        if tok is None:
            tok = check_build(lambda: cfg.tokenizer.build(resolution=resolution), "tokenizer", allocate=real)
        check_build(lambda: _build(cfg.generator, cfg.objective, tok, num_classes), "generator", allocate=real)
        with torch.device(device or "cpu"):
            tokenizer = tokenizer if tokenizer is not None else cfg.tokenizer.build(resolution=resolution)
            generator = _build(cfg.generator, cfg.objective, tokenizer, num_classes)
        names = class_names or [str(i) for i in range(num_classes)]
        return cls(cfg, tokenizer, generator, names)

    @property
    def weights(self) -> nn.Module:
        """The module exported as ``generator/model.safetensors`` (a flow model's backbone)."""
        return self.generator.weights_module()

    def param_counts(self) -> dict[str, int]:
        return {
            "generator": sum(p.numel() for p in self.weights.parameters()),
            "tokenizer": sum(p.numel() for p in self.tokenizer.parameters()),
        }

    # ------------------------------------------------------------------ disk

    def generator_spec(self) -> dict:
        """``generator/config.json``: what rebuilding the generator needs, without the run config."""
        return {
            "generator": to_dict(self.cfg.generator),
            "objective": to_dict(self.cfg.objective) if self.cfg.objective is not None else None,
            "token_spec": spec_to_dict(self.tokenizer.token_spec),
            "num_classes": len(self.class_names),
            # which tokenizer the generator was trained with (config + weights, as a token cache records it):
            # a run whose tokenizer/ folder was swapped for another one's is refused when it loads
            "tokenizer_fingerprint": fingerprint(self.tokenizer, tokenizer_spec(self.tokenizer, self.cfg.tokenizer)),
        }

    def save(self, run_dir: Path) -> None:
        run = RunFolder(run_dir)
        run.write_component("generator", self.generator_spec(), self.weights)
        run.write_component("tokenizer", tokenizer_spec(self.tokenizer, self.cfg.tokenizer), self.tokenizer)
        run.write_class_names(self.class_names)
        run.write_config(self.cfg.to_dict())

    @classmethod
    def load(cls, run_dir: Path | str | RunFolder, *, device=None) -> Pipeline:
        """A trained run, built by the task that made it: ``registry.get("task", run.task()).load(run, device)``
        (the protocol: ``genlab.tasks.base.Task``; a task may load another run first, e.g. its teacher)."""
        run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
        if not run.exists():
            raise RunError(f"run directory {run.path} does not exist; train one with `genlab train --preset NAME "
                           f"--out {run.path}`")  # fmt: skip
        return run_task(run).load(run, device=device)

    # ------------------------------------------------------------------ sampling

    @property
    def options_class(self) -> type[SampleOptions]:
        return type(self.cfg.sample.options)

    def sample_options(self, given: dict[str, Any] | None = None) -> SampleOptions:
        """The run's default sampling options with ``given`` ones (values or strings, by field name) replacing
        them, typed and validated; ValueError names a bad or unknown option."""
        cls = self.options_class
        fields, types = cls.fields(), typing.get_type_hints(cls)
        typed = {}
        for key, value in (given or {}).items():
            if key not in fields:
                raise ValueError(
                    f"{key} is not a sampling option of generator {self.cfg.generator.name}; its options: "
                    f"{', '.join(fields)}"
                )
            try:
                typed[key] = coerce(value, types[key], key)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        options = cls.merge(self.cfg.sample.options, typed)
        self.generator.check_options(options)
        return options

    def class_ids(self, spec: str | list) -> list[int]:
        """Class ids from ``"0,3,5"``, names (``"Flags,Food & Drink"``) or ``"all"``."""
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
        if items == ["all"]:
            return list(range(len(self.class_names)))
        lower = {n.lower(): i for i, n in enumerate(self.class_names)}
        ids = []
        for item in items:
            if item.lstrip("-").isdigit():
                i = int(item)
                if not 0 <= i < len(self.class_names):
                    raise ValueError(
                        f"class id {i} is out of range; this run has classes 0..{len(self.class_names) - 1}"
                    )
                ids.append(i)
            elif item.lower() in lower:
                ids.append(lower[item.lower()])
            else:
                raise ValueError(f"unknown class {item!r}; classes: {', '.join(self.class_names)}")
        if not ids:
            raise ValueError("no classes given")
        return ids

    @torch.no_grad()
    def generate(
        self,
        labels: list[int] | Tensor,
        *,
        seed: int = 0,
        options: SampleOptions | dict[str, Any] | None = None,
        batch_size: int = 64,
        precision: str = "fp32",
    ) -> Generated:
        """Images for ``labels``; image i uses seed ``seed + i`` whatever ``batch_size`` is. ``options``: the
        generator's SampleOptions, or a dict of changes to the run's defaults. ``precision`` "bf16" runs the
        networks under bf16 autocast (about 2x faster on a CPU with bf16 units, and on GPUs; a sampler's own
        state stays float32); "fp32" (the default) is exact."""
        opts = options if isinstance(options, SampleOptions) else self.sample_options(options)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        device = next(self.weights.parameters()).device
        out, res, t0 = [], None, time.perf_counter()
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size].to(device)
            seeds = torch.arange(seed + start, seed + start + len(y), dtype=torch.long)
            with torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
                res = self.generator.sample(y, seeds, opts)
                lengths = {} if res.lengths is None else {"lengths": res.lengths}  # variable-length samples only
                images = self.tokenizer.decode(res.tokens, seeds=seeds, **lengths)
            out.append(images.float().clamp(-1, 1).cpu())
        nfe, by_network = (res.nfe, res.networks_nfe()) if res is not None else (0, {})
        return Generated(torch.cat(out), labels, nfe, time.perf_counter() - t0, by_network, opts)


def _build(generator: Component, objective: Component | None, tokenizer: Tokenizer, num_classes: int) -> Generator:
    spec = tokenizer.token_spec
    codes = tokenizer.codes() if spec.discrete else None
    try:
        return build_generator(generator, objective, spec=spec, num_classes=num_classes, codes=codes)
    except ValueError as e:
        raise ConfigError(f"generator: {e}") from None


def grid_classes(num_classes: int, count: int = 0) -> list[int]:
    """The classes of a training grid: all of them (``count`` 0 or >= num_classes), else ``count`` evenly spread
    ones (always the same: a grid every 10k steps of an ImageNet run is 8 fixed classes, not 1,000)."""
    if count <= 0 or count >= num_classes:
        return list(range(num_classes))
    return [i * num_classes // count for i in range(count)]


def class_grid(pipe: Pipeline, per_class: int, *, seed: int = 0, classes: list[int] | None = None,
               **kw) -> Generated:  # fmt: skip
    """One row per class (every class, or ``classes``), ``per_class`` images each."""
    rows = range(len(pipe.class_names)) if classes is None else classes
    labels = [c for c in rows for _ in range(per_class)]
    return pipe.generate(labels, seed=seed, **kw)
