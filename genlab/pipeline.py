"""A trained run as one object: tokenizer + generator + class names + sampling defaults.

``Pipeline.from_config`` builds a fresh one (for training or counting parameters), ``Pipeline.load(run_dir)``
a trained one from ``runs/NAME/`` (the folder layout: ``genlab.runs.store``). Nothing here knows a generator
family: the generator is whatever ``build_generator`` makes of the config (a backbone under its objective, or a
self-contained model), sampled through its ``SampleOptions``.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genlab import registry
from genlab.config import Component, ConfigError, RunConfig, coerce, component_from_dict, to_dict
from genlab.generators.base import Generator, SampleOptions, build_generator
from genlab.generators.refiner import VelocityRefiner
from genlab.grids import save_grid
from genlab.runs.limits import check_build
from genlab.runs.store import CLASS_NAMES, CONFIG, RunError, RunFolder
from genlab.tokenizers.base import Kind as TokenKind
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec
from genlab.tokenizers.saved import fingerprint, tokenizer_spec

__all__ = ["Generated", "Pipeline", "RunError", "class_grid", "load_tokenizer", "save_grid", "save_tokenizer"]

RUN_FILES = (CONFIG, CLASS_NAMES, "generator/model.safetensors", "tokenizer/config.json")
TOKENIZER_RUN_FILES = (CONFIG, "tokenizer/config.json", "tokenizer/model.safetensors")


def dataset_info(cfg: RunConfig) -> tuple[int, int]:
    """(resolution, num_classes) of the configured dataset, without loading it."""
    cls = registry.get("dataset", cfg.data.name)
    return cfg.data.cfg.resolution, cls.num_classes(cfg.data.cfg)


@dataclass
class Generated:
    images: Tensor  # (B, 3, H, W) float in [-1, 1]
    labels: Tensor  # (B,)
    nfe: int  # network evaluations per image
    seconds: float
    extra_nfe: int = 0  # evaluations of an auxiliary network per image (FlowTurbo's refiner), not counted in nfe
    options: SampleOptions | None = None  # the options used


def spec_to_dict(spec: TokenSpec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(data: Any, where: str = "a saved token spec") -> TokenSpec:
    """The TokenSpec a JSON mapping describes, its fields checked as data (a RunError naming ``where``)."""
    kinds = typing.get_args(TokenKind)
    if not isinstance(data, dict):
        raise RunError(f"{where}: token_spec must be a JSON object, got {type(data).__name__}")
    if data.get("kind") not in kinds:
        raise RunError(f"{where}: token_spec.kind must be one of {', '.join(kinds)}, got {data.get('kind')!r}")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(TokenSpec)})
    if unknown:
        raise RunError(f"{where}: token_spec has unknown fields {unknown}")
    for key in ("shape", "scales"):
        v = data.get(key, [])
        if not isinstance(v, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
            raise RunError(f"{where}: token_spec.{key} must be a list of integers, got {v!r}")
    for key in ("vocab_size", "code_dim"):
        v = data.get(key, 0)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 2**40:
            raise RunError(f"{where}: token_spec.{key} must be an integer in 0..2**40, got {v!r}")
    for key in ("variable_length", "stochastic_decoder"):
        if not isinstance(data.get(key, False), bool):
            raise RunError(f"{where}: token_spec.{key} must be true or false, got {data.get(key)!r}")
    try:
        return TokenSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except (TypeError, ValueError) as e:
        raise RunError(f"{where}: the token spec is malformed ({e})") from None


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
    def load(cls, run_dir: Path | str, *, device=None, refiner: Path | str | None = None) -> Pipeline:
        """A trained run, built from its own folders. A FlowTurbo refiner run loads its base run with the refiner
        attached; ``refiner`` attaches the one of another refiner run."""
        run = RunFolder(run_dir)
        hint = f"train one with `genlab train --preset NAME --out {run.path}`"
        if not run.exists():
            raise RunError(f"run directory {run.path} does not exist; {hint}")
        task = run.task()
        if task == "flowturbo-refiner":
            return cls.load(_refiner_base(run), device=device, refiner=run.path)
        if task == "tokenizer":
            raise RunError(f"{run.path} is a tokenizer run: it has no generator to sample (train one on it)")
        run.require(RUN_FILES, "genlab run", "finish or resume its training with `genlab train ... --resume auto`")
        cfg = run.read_config()
        class_names = run.read_class_names()
        tokenizer = _load_run_tokenizer(run, cfg)
        gen_spec = run.read_component_config("generator")
        if "token_spec" in gen_spec:  # self-contained: rebuilt from generator/config.json
            if spec_from_dict(gen_spec["token_spec"], f"{run.path}/generator/config.json") != tokenizer.token_spec:
                raise RunError(f"{run.path}/generator was trained on other tokens than {run.path}/tokenizer makes")
            if gen_spec.get("num_classes") != len(class_names):
                raise RunError(f"{run.path}/generator/config.json and {CLASS_NAMES} disagree on the class count")
            cfg.generator, cfg.objective = _component_pair(gen_spec, run)
        _check_tokenizer_fingerprint(run, gen_spec, tokenizer)
        pipe = cls.from_config(cfg, class_names, tokenizer=tokenizer)
        _load_state(pipe.weights, run.read_weights("generator"), f"{run.path}/generator/model.safetensors")
        if refiner is not None:
            pipe.attach_refiner(refiner)
        return pipe.to(device or "cpu").eval()

    def attach_refiner(self, refiner_run: Path | str) -> None:
        """Load the velocity refiner of a FlowTurbo refiner run (``genlab train --preset flowturbo-refiner``)."""
        run = RunFolder(refiner_run)
        if not run.has_component("refiner"):
            raise RunError(
                f"{refiner_run} has no trained refiner ({run.path}/refiner/model.safetensors); "
                "train one with `genlab train --preset flowturbo-refiner base_run=RUN --out DIR`"
            )
        if not hasattr(self.generator, "attach"):
            raise RunError(f"a FlowTurbo refiner refines a flow model; {self.cfg.generator.name} is not one")
        saved, state = run.read_component("refiner")
        try:
            ref = VelocityRefiner.from_saved(saved)
        except ValueError as e:
            raise RunError(f"{run.path}/refiner/config.json: {e}") from None
        _load_state(ref, state, f"{run.path}/refiner/model.safetensors")
        ref.eval()
        if ref.spec != self.tokenizer.token_spec or ref.num_classes != len(self.class_names):
            raise RunError(f"the refiner in {refiner_run} was trained for another model (tokens or classes differ)")
        device = next(self.weights.parameters()).device
        self.generator.attach("refiner", ref.to(device))

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
    ) -> Generated:
        """Images for ``labels``; image i uses seed ``seed + i`` whatever ``batch_size`` is. ``options``: the
        generator's SampleOptions, or a dict of changes to the run's defaults."""
        opts = options if isinstance(options, SampleOptions) else self.sample_options(options)
        labels = torch.as_tensor(labels, dtype=torch.long)
        device = next(self.weights.parameters()).device
        out, nfe, extra, t0 = [], 0, 0, time.perf_counter()
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size].to(device)
            seeds = torch.arange(seed + start, seed + start + len(y), dtype=torch.long)
            res = self.generator.sample(y, seeds, opts)
            out.append(self.tokenizer.decode(res.tokens).clamp(-1, 1).cpu())
            nfe, extra = res.nfe, res.extra_nfe
        return Generated(torch.cat(out), labels, nfe, time.perf_counter() - t0, extra, opts)


def _build(generator: Component, objective: Component | None, tokenizer: Tokenizer, num_classes: int) -> Generator:
    spec = tokenizer.token_spec
    codes = tokenizer.codes() if spec.discrete else None
    try:
        return build_generator(generator, objective, spec=spec, num_classes=num_classes, codes=codes)
    except ValueError as e:
        raise ConfigError(f"generator: {e}") from None


def _component_pair(spec: dict, run: RunFolder) -> tuple[Component, Component | None]:
    try:
        gen = component_from_dict("generator", spec.get("generator"), "generator")
        obj = spec.get("objective")
        return gen, component_from_dict("objective", obj, "objective") if obj is not None else None
    except ConfigError as e:
        raise RunError(f"{run.path}/generator/config.json: {e}") from None


def _load_state(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise RunError(f"{where} does not fit the model its config describes ({first})") from None


def _load_run_tokenizer(run: RunFolder, cfg: RunConfig) -> Tokenizer:
    """The run's own copy of its tokenizer (tokenizer/config.json + weights), whatever moved since training."""
    spec = run.read_component_config("tokenizer")
    try:
        comp = component_from_dict("tokenizer", spec, "tokenizer")
    except ConfigError as e:
        raise RunError(f"{run.path}/tokenizer/config.json: {e}") from None
    where = f"{run.path}/tokenizer/config.json"
    try:
        check_build(lambda: comp.build(resolution=cfg.data.cfg.resolution), where)
    except ConfigError as e:
        raise RunError(str(e)) from None
    tokenizer = comp.build(resolution=cfg.data.cfg.resolution)
    if any(True for _ in tokenizer.state_dict()):
        if not run.has("tokenizer/model.safetensors"):
            raise RunError(f"{run.path}/tokenizer has no model.safetensors; finish or resume the run's training")
        _load_state(tokenizer, run.read_weights("tokenizer"), f"{run.path}/tokenizer/model.safetensors")
    tokenizer.source = spec
    return tokenizer.requires_grad_(False).eval()


def _check_tokenizer_fingerprint(run: RunFolder, gen_spec: dict, tokenizer: Tokenizer) -> None:
    """RunError unless the run's tokenizer is the one its generator recorded (runs saved before the fingerprint was
    recorded have none, and load as they did)."""
    saved = gen_spec.get("tokenizer_fingerprint")
    if saved is None:
        return
    mine = fingerprint(tokenizer, tokenizer.source)
    if saved != mine:
        raise RunError(
            f"{run.path}/tokenizer is not the tokenizer {run.path}/generator was trained with (fingerprint "
            f"{str(saved)[:12]} recorded in generator/config.json, {mine[:12]} found); restore the run's own "
            "tokenizer folder"
        )


def _refiner_base(run: RunFolder) -> Path:
    """The base run of a FlowTurbo refiner run (relative paths are tried from the cwd, then from the run)."""
    base = Path(str(run.read_config_dict().get("base_run", "")))
    if not base.is_absolute() and not base.is_dir() and (run.path / base).is_dir():
        base = run.path / base
    return base


def class_grid(pipe: Pipeline, per_class: int, *, seed: int = 0, **kw) -> Generated:
    """One row per class, ``per_class`` images each."""
    labels = [c for c in range(len(pipe.class_names)) for _ in range(per_class)]
    return pipe.generate(labels, seed=seed, **kw)


# ----------------------------------------------------------------------------- tokenizer runs (task: tokenizer)


def save_tokenizer(cfg: RunConfig, tokenizer: nn.Module, run_dir: Path, class_names: list[str]) -> None:
    """A trained tokenizer run: config.yaml, class_names.json, tokenizer/{config.json, model.safetensors}."""
    run = RunFolder(run_dir)
    run.write_component("tokenizer", to_dict(cfg.tokenizer), tokenizer)
    run.write_class_names(class_names)
    run.write_config(cfg.to_dict())


def load_tokenizer(run_dir: Path | str, *, device=None) -> tuple[RunConfig, nn.Module]:
    """(config, tokenizer in eval mode) of a run trained with ``task: tokenizer``."""
    run = RunFolder(run_dir)
    run.require(TOKENIZER_RUN_FILES, "tokenizer run", "train one with `genlab train --preset smoke-vq --out DIR`")
    cfg = run.read_config()
    try:
        tokenizer = _load_run_tokenizer(run, cfg)
    except TokenizerError as e:
        raise RunError(str(e)) from None
    return cfg, tokenizer.to(device or "cpu").eval()
