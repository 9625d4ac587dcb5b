"""Typed configs: dataclasses, YAML presets shipped in ``genlab/presets``, dotted CLI overrides.

A run config is a YAML mapping of sections. Component sections (``data``, ``tokenizer``,
``generator``, ``objective``) carry a ``name`` that selects a registered class; the rest
of the section is checked against that class's ``Config`` dataclass. ``train`` and
``sample`` are plain typed sections. Every unknown key or wrong type is a ``ConfigError``
naming the dotted key and listing the valid keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from genlab import registry


class ConfigError(ValueError):
    """A config that cannot be used as written; the message says which key and why."""


# ----------------------------------------------------------------------------- typed dataclasses


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


_YAML_BOOLS = {True: ("yes", "on", "true", "y"), False: ("no", "off", "false", "n")}


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: expected {tp}, got {value!r}")
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads no/off/yes/on as booleans: take the choice so spelled
            spelled = [a for a in args if isinstance(a, str) and a.lower() in _YAML_BOOLS[value]]
            value = spelled[0] if spelled else value
        if any(value == a and type(value) is type(a) for a in args):  # True is not the choice 1
            return value
        raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and type."""
    where = prefix or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown key {dotted}; valid keys here: {', '.join(fields)}")
    kwargs = {name: coerce(v, hints[name], f"{prefix}.{name}" if prefix else name) for name, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where}: {e}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready data from dataclasses and components."""
    if isinstance(obj, SampleSection):
        return obj.to_dict()
    if isinstance(obj, Component):
        return {"name": obj.name, **to_dict(obj.cfg)}
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ----------------------------------------------------------------------------- components


@dataclass
class Component:
    """A registered part chosen by name, with that part's typed config."""

    kind: str
    name: str
    cfg: Any

    def build(self, *args: Any, **kwargs: Any) -> Any:
        return registry.get(self.kind, self.name)(self.cfg, *args, **kwargs)


def component_from_dict(kind: str, data: Any, prefix: str) -> Component:
    if not isinstance(data, dict) or "name" not in data:
        raise ConfigError(f"{prefix}: needs a 'name'; registered {kind}s: {', '.join(registry.names(kind))}")
    data = dict(data)
    name = str(data.pop("name"))
    try:
        cls = registry.get(kind, name)
    except registry.RegistryError as e:
        raise ConfigError(f"{prefix}.name: {e}") from None
    return Component(kind, name, from_dict(cls.Config, data, prefix=prefix))


# ----------------------------------------------------------------------------- the run config


MAX_BATCH = 65_536  # train.batch_size and grad_accum: 64x the largest batch of the presets (1024: VAR, imagenet256)
MAX_RESOLUTION = 8_192  # data.resolution: image sides above this are a typo (or a crafted config), not a dataset


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 64  # global batch (all processes together, before accumulation)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # peak learning rate
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"  # after warm-up
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.9999  # upper bound; diffusers' EMA warms up as (1+n)/(10+n)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 10
    sample_every: int = 0  # 0: only at the end
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2  # newest valid checkpoints kept on disk
    num_workers: int = 0  # DataLoader workers for datasets that are not held in memory
    tensorboard: bool = True
    disc_lr: float = 0.0  # learning rate of a task's discriminator (second optimizer); 0: train.lr
    init_from: str = ""  # RUN or RUN:component: start from that run's exported weights (strict; no resume)
    # shard weights, gradients and optimizer states over the processes (FSDP2 through accelerate; docs/imagenet.md)
    fsdp: bool = False
    fsdp_wrap: str = ""  # with fsdp: comma-separated module classes sharded as units of their own (e.g. DiTBlock)

    def validate(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train.{key} must be positive, got {getattr(self, key)}")
        for key in ("batch_size", "grad_accum"):
            if getattr(self, key) > MAX_BATCH:
                raise ValueError(f"train.{key} must be at most {MAX_BATCH:,}, got {getattr(self, key):,}")
        check_train_numbers(self)


def check_train_numbers(t: TrainConfig) -> None:
    """Every number of ``train`` finite and in its range (NaN fails every comparison, so ``x < 0`` checks pass it)."""
    from genlab.safeio import require_finite

    require_finite("train.lr", t.lr, low=0.0, high=1e3)
    if t.lr == 0:
        raise ValueError("train.lr must be positive, got 0.0")
    require_finite("train.disc_lr", t.disc_lr, low=0.0, high=1e3)
    require_finite("train.weight_decay", t.weight_decay, low=0.0, high=1e3)
    require_finite("train.grad_clip", t.grad_clip, low=0.0)
    for key, value in (("ema_decay", t.ema_decay), *((f"betas[{i}]", b) for i, b in enumerate(t.betas))):
        if not 0.0 <= require_finite(f"train.{key}", value) < 1.0:
            raise ValueError(f"train.{key} must be in [0, 1), got {value}")
    if len(t.betas) != 2:
        raise ValueError(f"train.betas must be two numbers, got {list(t.betas)}")
    for key in ("warmup_steps", "sample_every", "checkpoint_every", "keep_checkpoints", "num_workers"):
        if getattr(t, key) < 0:
            raise ValueError(f"train.{key} must be >= 0, got {getattr(t, key)}")
    if not 0 <= t.seed < 2**63:
        raise ValueError(f"train.seed must be in [0, 2**63), got {t.seed}")
    if t.steps > 10**10:
        raise ValueError(f"train.steps must be <= 1e10, got {t.steps}")
    if t.fsdp_wrap and (not t.fsdp or not all(n.strip().isidentifier() for n in t.fsdp_wrap.split(","))):
        raise ValueError(f"train.fsdp_wrap needs train.fsdp=true and class names like DiTBlock, got {t.fsdp_wrap!r}")


@dataclass
class SampleSection:
    """A run's ``sample:`` section: the layout of the grids written while training, and the generator's default
    sampling options (its ``SampleOptions`` class: flat keys beside these two, e.g. ``steps``, ``cfg``)."""

    per_class: int = 8  # images per class row in the periodic sample grids
    seed: int = 0  # image i of a grid uses seed + i
    grid_classes: int = 0  # rows of the training grids: 0 every class, N that many fixed, evenly spread classes
    options: Any = None  # the generator's SampleOptions (None in a tokenizer run)

    GRID_KEYS: typing.ClassVar[tuple[str, ...]] = ("per_class", "seed", "grid_classes")

    def validate(self) -> None:
        if not 1 <= self.per_class <= 1024:
            raise ValueError(f"sample.per_class must be in [1, 1024], got {self.per_class}")
        if not 0 <= self.seed < 2**62:
            raise ValueError(f"sample.seed must be in [0, 2**62), got {self.seed}")
        if not 0 <= self.grid_classes <= 100_000:
            raise ValueError(f"sample.grid_classes must be in [0, 100000], got {self.grid_classes}")

    @classmethod
    def from_dict(cls, data: Any, options_cls: type | None) -> SampleSection:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"sample: expected a mapping of keys, got {data!r}")
        grid = {k: data[k] for k in cls.GRID_KEYS if k in data}
        rest = {k: v for k, v in data.items() if k not in cls.GRID_KEYS}
        section = from_dict(cls, grid, "sample")
        if options_cls is None:
            if rest:
                raise ConfigError(f"unknown key {', '.join(f'sample.{k}' for k in sorted(rest))}; valid keys here: "
                                  f"{', '.join(cls.GRID_KEYS)}")  # fmt: skip
        else:
            try:
                section.options = from_dict(options_cls, rest, "sample")
            except ConfigError as e:
                if not str(e).startswith("unknown key"):
                    raise
                raise ConfigError(f"{e}, {', '.join(cls.GRID_KEYS)}") from None
        return section

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.GRID_KEYS}
        return {**out, **(to_dict(self.options) if self.options is not None else {})}


def sample_options_class(generator: Component, objective: Component | None) -> type:
    """The SampleOptions class of a generator section: a backbone's comes from its objective."""
    cls = registry.get("generator", generator.name)
    if getattr(cls, "ROLE", "generator") == "backbone":
        if objective is None:
            raise ConfigError(
                f"generator {generator.name} is a backbone: it needs an objective section (e.g. objective: {{name: flow}})"
            )
        return registry.get("objective", objective.name).SampleOptions
    if objective is not None:
        raise ConfigError(f"generator {generator.name} owns its objective: remove the objective section")
    return cls.SampleOptions


COMPONENT_SECTIONS = {"data": "dataset", "tokenizer": "tokenizer", "generator": "generator", "objective": "objective"}
TOKENIZER_SECTIONS = {"data": "dataset", "tokenizer": "tokenizer"}  # task: tokenizer trains the tokenizer alone


@dataclass
class RunConfig:
    """The run config of the ``generator`` and ``tokenizer`` tasks."""

    data: Component
    tokenizer: Component
    generator: Component | None = None  # absent in tokenizer runs
    objective: Component | None = None  # a backbone generator's objective (flow); absent otherwise
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleSection = field(default_factory=SampleSection)
    preset: str = ""  # the preset this config came from (informational)
    task: Literal["generator", "tokenizer"] = "generator"  # what is trained: a generator, or the tokenizer itself

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a run config is a mapping of sections, got {data!r}")
        valid = [*COMPONENT_SECTIONS, "train", "sample", "preset", "task"]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"unknown key {', '.join(unknown)}; valid sections: {', '.join(valid)}")
        task = coerce(data.get("task", "generator"), Literal["generator", "tokenizer"], "task")
        if task == "tokenizer":
            extra = [s for s in COMPONENT_SECTIONS if s not in TOKENIZER_SECTIONS and data.get(s) is not None]
            if extra:
                raise ConfigError(f"a tokenizer run (task: tokenizer) has no {', '.join(extra)} section")
        required = TOKENIZER_SECTIONS if task == "tokenizer" else {k: v for k, v in COMPONENT_SECTIONS.items()
                                                                   if k != "objective"}  # fmt: skip
        missing = [s for s in required if s not in data]
        if missing:
            raise ConfigError(f"the config has no {', '.join(missing)} section")
        parts = {s: component_from_dict(kind, data[s], s) for s, kind in required.items()}
        resolution = getattr(parts["data"].cfg, "resolution", 0)
        if isinstance(resolution, int) and not 0 <= resolution <= MAX_RESOLUTION:
            raise ConfigError(f"data.resolution must be in [0, {MAX_RESOLUTION:,}], got {resolution:,}")
        options_cls = None
        if task == "generator":
            if data.get("objective") is not None:
                parts["objective"] = component_from_dict("objective", data["objective"], "objective")
            options_cls = sample_options_class(parts["generator"], parts.get("objective"))
        return cls(
            **parts,
            train=from_dict(TrainConfig, data.get("train"), "train"),
            sample=SampleSection.from_dict(data.get("sample"), options_cls),
            preset=str(data.get("preset", "")),
            task=task,
        )

    def to_dict(self) -> dict:
        out = to_dict(self)
        if self.task == "generator":
            out.pop("task")
        return {k: v for k, v in out.items() if v is not None}


def config_from_dict(data: dict) -> Any:
    """The config class its ``task`` names (default: a generator run), built and checked."""
    task = data.get("task", "generator") if isinstance(data, dict) else "generator"
    try:
        cls = registry.get("task", str(task))
    except registry.RegistryError as e:
        raise ConfigError(f"task: {e}") from None
    if task == "generator" and isinstance(data, dict):
        data = {k: v for k, v in data.items() if k != "task"}
    return cls.Config.from_dict(data)


# ----------------------------------------------------------------------------- presets and overrides

PRESET_ROOT = "presets"


def _preset_files() -> dict[str, Any]:
    """Every YAML file under genlab/presets by name ("imagenet256/dit-xl-2"); names starting "_" are bases."""
    found: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                found[prefix + child.name[: -len(".yaml")]] = child

    walk(resources.files("genlab") / PRESET_ROOT, "")
    return found


def list_presets() -> list[str]:
    return sorted(n for n in _preset_files() if not n.rsplit("/", 1)[-1].startswith("_"))


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Any) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:  # also python tags (!!python/object): safe_load refuses them
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or type(e).__name__}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({type(e).__name__})") from None


def _checked_preset(name: str, data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name!r} must be a mapping of sections, got a {type(data).__name__}")
    return data


def load_preset_dict(name: str, chain: tuple[str, ...] = ()) -> dict:
    """The raw mapping of a preset, with its ``base:`` chain merged in."""
    files = _preset_files()
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        data = _read_yaml(path)
    elif name in files:
        data = _read_yaml(files[name])
    else:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(list_presets())} (or a path to a .yaml file)")
    data = _checked_preset(name, data)
    base = data.pop("base", None)
    if base:
        if not isinstance(base, str) or base in chain or base == name:
            raise ConfigError(f"preset {name!r}: base {base!r} names itself or a preset that bases on it")
        data = _deep_merge(load_preset_dict(base, (*chain, name)), data)
    data["preset"] = name  # the preset asked for, not the base it builds on
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.steps=100)")
    key, raw = text.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = _deep_merge(data, {})
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else nxt
                if not isinstance(nxt, dict):
                    raise ConfigError(f"override {text!r}: {k} is not a section")
                node[k] = nxt = dict(nxt)
            node = nxt
        if keys[-1] == "name" and node.get("name") != value:
            # a new component: its old options may not apply, so start from its defaults
            for other in [k for k in node if k != "name"]:
                node.pop(other)
        node[keys[-1]] = value
    return data


def load(preset: str, overrides: list[str] | None = None) -> Any:
    """Resolve a preset (by name or path) plus ``key=value`` overrides into a checked config (a RunConfig unless
    the preset names another ``task``: the task's ``Config``)."""
    return config_from_dict(apply_overrides(load_preset_dict(preset), overrides or []))
