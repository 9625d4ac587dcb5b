"""The run folder: every read and write of ``runs/NAME/`` goes through ``RunFolder``.

    config.yaml                       the fully resolved run config (its ``task`` says what was trained)
    class_names.json                  class id -> name
    tokenizer/{config.json, model.safetensors}
    generator/{config.json, model.safetensors}   (EMA weights; config.json holds what rebuilding needs)
    refiner/{config.json, model.safetensors}     (a FlowTurbo refiner run)
    checkpoints/step_XXXXXXX/          trainer state (genlab.train.checkpoint)
    samples/step_XXXXXXX.png
    metrics.jsonl                     one JSON object per log/eval event
    recon.json                        a tokenizer run's reconstruction metrics
    genlab_run.json                   the run manifest: this is a genlab run, and these names are genlab's (OWN)

A run is self-contained: its components load from their own folders, whatever moved since. Every malformed
file is a ``RunError`` naming the file and what to do, never a traceback.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file
from torch import Tensor, nn

CONFIG, CLASS_NAMES, METRICS, RECON = "config.yaml", "class_names.json", "metrics.jsonl", "recon.json"
COMPONENT_CONFIG, COMPONENT_WEIGHTS = "config.json", "model.safetensors"
RUN_FILES = (CONFIG, CLASS_NAMES, "generator/model.safetensors", "tokenizer/config.json")
TOKENIZER_RUN_FILES = (CONFIG, "tokenizer/config.json", "tokenizer/model.safetensors")
MANIFEST = "genlab_run.json"  # marks a folder as a genlab run and lists the names genlab writes in it
COMPONENTS = ("generator", "tokenizer", "refiner")
# what genlab writes in a run folder (``fnmatch`` patterns relative to it; a pattern matching a folder owns it
# whole): ``genlab train --overwrite`` deletes only these, and only in a folder whose manifest lists them
OWN = (
    CONFIG, CLASS_NAMES, METRICS, RECON, f".{CONFIG}.tmp",
    *(f"{part}/{name}" for part in COMPONENTS for name in (COMPONENT_CONFIG, COMPONENT_WEIGHTS)),
    "checkpoints/step_*", "checkpoints/.tmp-step_*", "checkpoints/.old-step_*", "samples/step_*.png",
    "tensorboard/genlab", "tensorboard/events.out.tfevents.*",
)  # fmt: skip


class RunError(RuntimeError):
    """A run directory that is missing, incomplete or malformed; the message names the file and what to do."""


def state_of(module: nn.Module) -> dict[str, Tensor]:
    """A module's state dict as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_state(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    """``module.load_state_dict(state)`` (strict), a one-line ``RunError`` naming ``where`` when it does not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise RunError(f"{where} does not fit the model its config describes ({first})") from None


@dataclass
class Assembled:
    """A generator run's parts as its folder holds them (``RunFolder.assemble``); the task builds its model."""

    cfg: Any  # the run config, its generator/objective sections as generator/config.json saved them
    class_names: list[str]  # class id -> name
    tokenizer: nn.Module  # the run's own tokenizer: weights loaded, eval(), no gradients


def spec_to_dict(spec: Any) -> dict:
    """A ``TokenSpec`` as generator/config.json stores it."""
    return spec.to_dict()


def spec_from_dict(data: Any, where: str = "a saved token spec") -> Any:
    """The ``TokenSpec`` a JSON mapping describes, its fields checked as data first (a RunError naming ``where``)."""
    import dataclasses
    import typing

    from genlab.tokenizers.base import Kind, TokenSpec

    kinds = typing.get_args(Kind)
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
        return TokenSpec.from_dict(data)
    except (TypeError, ValueError, AttributeError) as e:
        raise RunError(f"{where}: the token spec is malformed ({e})") from None


class RunFolder:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._config: dict | None = None  # config.yaml, parsed once per RunFolder (one command holds one)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ paths

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def exists(self) -> bool:
        return self.path.is_dir()

    def has(self, *names: str) -> bool:
        return all((self.path / n).is_file() for n in names)

    def has_component(self, part: str) -> bool:
        return self.has(f"{part}/{COMPONENT_CONFIG}", f"{part}/{COMPONENT_WEIGHTS}")

    def require(self, files: tuple[str, ...], what: str, hint: str) -> None:
        """RunError naming every file of ``files`` missing here, and what to do."""
        if not self.exists():
            raise RunError(f"run directory {self.path} does not exist; {hint}")
        missing = [f for f in files if not (self.path / f).is_file()]
        if missing:
            raise RunError(f"{self.path} is not a finished {what} (missing {', '.join(missing)}); {hint}")

    # ------------------------------------------------------------------ reading

    def read_config_dict(self) -> dict:
        """config.yaml as a mapping (a copy: callers may change it); the file is parsed once per RunFolder."""
        if self._config is None:
            self._config = self._parse_config()
        return copy.deepcopy(self._config)

    def _parse_config(self) -> dict:
        path = self.file(CONFIG)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise RunError(f"cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise RunError(f"{path} is not text (UTF-8); restore it or retrain the run") from None
        except yaml.YAMLError as e:
            raise RunError(
                f"{path} is not valid YAML ({str(e).splitlines()[0]}); restore it or retrain the run"
            ) from None
        if not isinstance(data, dict):
            raise RunError(f"{path} does not hold a run config (a mapping of sections)")
        return data

    def read_config(self) -> Any:
        """The run's config object (its task's Config class), checked."""
        from genlab.config import ConfigError, config_from_dict

        try:
            return config_from_dict(self.read_config_dict())
        except ConfigError as e:
            raise RunError(f"{self.file(CONFIG)}: {e}") from None

    def task(self) -> str:
        """The task that made this run ("generator" when config.yaml names none); "" without a config."""
        if not self.has(CONFIG):
            return ""
        return str(self.read_config_dict().get("task", "generator"))

    def read_class_names(self) -> list[str]:
        path = self.file(CLASS_NAMES)
        names = self._read_json(path)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RunError(f"{path} must be a non-empty JSON list of class names")
        return names

    def read_component(self, part: str) -> tuple[dict, dict[str, Tensor]]:
        """(config.json, state dict) of a component folder (``tokenizer``, ``generator``, ``refiner``)."""
        return self.read_component_config(part), self.read_weights(part)

    def read_component_config(self, part: str) -> dict:
        path = self.path / part / COMPONENT_CONFIG
        spec = self._read_json(path)
        if not isinstance(spec, dict):
            raise RunError(f"{path} must be a JSON object")
        return spec

    def read_weights(self, part: str) -> dict[str, Tensor]:
        """``part/model.safetensors`` through the one checked loader (header, finiteness: ``genlab.safeio``)."""
        from genlab.safeio import CorruptFileError, load_safetensors_checked

        path = self.path / part / COMPONENT_WEIGHTS
        if not path.exists():
            raise RunError(f"{path} is missing; finish or resume the run's training (`genlab train ... --resume auto`)")
        try:
            return load_safetensors_checked(path)
        except CorruptFileError as e:
            raise RunError(f"{e}; restore it or retrain the run") from None

    def read_metrics(self) -> list[dict]:
        """Every record of metrics.jsonl; lines that are not JSON objects are skipped."""
        path = self.file(METRICS)
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def read_recon(self) -> dict | None:
        path = self.file(RECON)
        return self._read_json(path) if path.is_file() else None

    # ------------------------------------------------------------------ assembly (what Pipeline.load reads)

    def load_weights(self, part: str, module: nn.Module) -> nn.Module:
        """``part/model.safetensors`` loaded strictly into ``module`` (a one-line RunError when it does not fit)."""
        load_state(module, self.read_weights(part), f"{self.path}/{part}/{COMPONENT_WEIGHTS}")
        return module

    def load_tokenizer(self, cfg: Any) -> nn.Module:
        """The run's own copy of its tokenizer (tokenizer/config.json + weights), whatever moved since training."""
        from genlab.config import ConfigError, component_from_dict
        from genlab.runs.limits import check_build
        from genlab.tokenizers.base import TokenizerError

        spec = self.read_component_config("tokenizer")
        where = f"{self.path}/tokenizer/{COMPONENT_CONFIG}"
        try:
            comp = component_from_dict("tokenizer", spec, "tokenizer")
            check_build(lambda: comp.build(resolution=cfg.data.cfg.resolution), where)  # on the meta device first
            tokenizer = comp.build(resolution=cfg.data.cfg.resolution)
        except ConfigError as e:
            raise RunError(f"{self.path}/tokenizer/config.json: {e}") from None
        except TokenizerError as e:
            raise RunError(str(e)) from None
        if any(True for _ in tokenizer.state_dict()):
            if not self.has(f"tokenizer/{COMPONENT_WEIGHTS}"):
                raise RunError(f"{self.path}/tokenizer has no model.safetensors; finish or resume the run's training")
            self.load_weights("tokenizer", tokenizer)
        tokenizer.source = spec
        return tokenizer.requires_grad_(False).eval()

    def assemble(self) -> Assembled:
        """A finished generator run's config, class names and tokenizer; the generator's sections come from
        generator/config.json (self-contained), checked against the tokenizer's tokens and the class count."""
        self.require(RUN_FILES, "genlab run", "finish or resume its training with `genlab train ... --resume auto`")
        cfg = self.read_config()
        class_names = self.read_class_names()
        tokenizer = self.load_tokenizer(cfg)
        gen_spec = self.read_component_config("generator")
        if "token_spec" in gen_spec:  # self-contained: rebuilt from generator/config.json
            where = f"{self.path}/generator/{COMPONENT_CONFIG}"
            if spec_from_dict(gen_spec["token_spec"], where) != tokenizer.token_spec:
                raise RunError(f"{self.path}/generator was trained on other tokens than {self.path}/tokenizer makes")
            if gen_spec.get("num_classes") != len(class_names):
                raise RunError(f"{self.path}/generator/config.json and {CLASS_NAMES} disagree on the class count")
            cfg.generator, cfg.objective = self._component_pair(gen_spec)
        self._check_tokenizer_fingerprint(gen_spec, tokenizer)
        return Assembled(cfg, class_names, tokenizer)

    def _check_tokenizer_fingerprint(self, gen_spec: dict, tokenizer: nn.Module) -> None:
        """RunError unless the run's tokenizer is the one its generator recorded (runs saved before the fingerprint
        was recorded have none, and load as they did)."""
        from genlab.tokenizers.saved import fingerprint

        saved = gen_spec.get("tokenizer_fingerprint")
        if saved is None:
            return
        mine = fingerprint(tokenizer, tokenizer.source)
        if saved != mine:
            raise RunError(
                f"{self.path}/tokenizer is not the tokenizer {self.path}/generator was trained with (fingerprint "
                f"{str(saved)[:12]} recorded in generator/config.json, {mine[:12]} found); restore the run's own "
                "tokenizer folder"
            )

    def _component_pair(self, spec: dict) -> tuple[Any, Any]:
        from genlab.config import ConfigError, component_from_dict

        try:
            gen = component_from_dict("generator", spec.get("generator"), "generator")
            obj = spec.get("objective")
            return gen, component_from_dict("objective", obj, "objective") if obj is not None else None
        except ConfigError as e:
            raise RunError(f"{self.path}/generator/config.json: {e}") from None

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path} is missing; finish or resume the run's training") from None
        except OSError as e:
            raise RunError(f"cannot read {path}: {e.strerror or e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path} is not valid JSON ({e}); restore it or retrain the run") from None

    # ------------------------------------------------------------------ writing

    def claim(self) -> None:
        """Write the run manifest (``genlab_run.json``: the names genlab owns here) unless it is there."""
        f = self.file(MANIFEST)
        if not f.is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps({"genlab_run": 1, "own": list(OWN)}, indent=2))

    def owned(self) -> list[str] | None:
        """The patterns the run manifest lists as genlab's, or None when the folder has no valid manifest."""
        f = self.file(MANIFEST)
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        own = data.get("own") if isinstance(data, dict) and data.get("genlab_run") == 1 else None
        if not isinstance(own, list) or not all(isinstance(p, str) for p in own):
            return None
        return [p for p in own if p in OWN]  # a manifest can only narrow what genlab deletes, never widen it

    def write_config(self, data: dict) -> None:
        self._config = None
        self.claim()
        tmp = self.file(f".{CONFIG}.tmp")  # then renamed: a crash leaves the old config or the new one, never half
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
        os.replace(tmp, self.file(CONFIG))

    def write_class_names(self, names: list[str]) -> None:
        self.claim()
        self.file(CLASS_NAMES).write_text(json.dumps(list(names), indent=2))

    def write_component(self, part: str, spec: dict, weights: nn.Module | dict[str, Tensor]) -> None:
        """``part/config.json`` and ``part/model.safetensors`` (a module's state, or a state dict)."""
        folder = self.path / part
        self.claim()
        folder.mkdir(parents=True, exist_ok=True)
        state = state_of(weights) if isinstance(weights, nn.Module) else {k: v.detach().cpu().contiguous()
                                                                          for k, v in weights.items()}  # fmt: skip
        save_file(state, str(folder / COMPONENT_WEIGHTS))
        (folder / COMPONENT_CONFIG).write_text(json.dumps(spec, indent=2))

    def append_metrics(self, record: dict) -> None:
        self.claim()
        with open(self.file(METRICS), "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_recon(self, metrics: dict) -> None:
        self.file(RECON).write_text(json.dumps(metrics, indent=2))


# ----------------------------------------------------------------------------- tokenizer runs


def save_tokenizer(cfg: Any, tokenizer: nn.Module, run_dir: Path, class_names: list[str]) -> None:
    """A trained tokenizer run: config.yaml, class_names.json, tokenizer/{config.json, model.safetensors}."""
    from genlab.config import to_dict

    run = RunFolder(run_dir)
    run.write_component("tokenizer", to_dict(cfg.tokenizer), tokenizer)
    run.write_class_names(class_names)
    run.write_config(cfg.to_dict())


def load_tokenizer(run_dir: Path | str | RunFolder, *, device=None) -> tuple[Any, nn.Module]:
    """(config, tokenizer in eval mode) of a run trained with ``task: tokenizer``."""
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    run.require(TOKENIZER_RUN_FILES, "tokenizer run", "train one with `genlab train --preset smoke-vq --out DIR`")
    cfg = run.read_config()
    return cfg, run.load_tokenizer(cfg).to(device or "cpu").eval()
