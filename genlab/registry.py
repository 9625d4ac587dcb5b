"""One registry for every pluggable part of genlab.

``register(kind, name)`` decorates a class or function; ``get(kind, name)`` returns it;
``names(kind)`` lists what exists (CLI choices and parametrised tests read it).
Built-ins are registered by explicit imports in each subpackage's ``__init__``; the first lookup of any kind
imports those subpackages (``BUILTINS``), so no import order matters: ``from genlab import config;
config.load("quickstart")`` works in a fresh interpreter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

KINDS = (
    "dataset", "tokenizer", "quantizer", "image_encoder", "generator", "objective", "sampler", "evaluator", "refiner",
    "task", "importer",
)  # fmt: skip
# the subpackages whose __init__ registers the built-ins (imported on the first lookup)
BUILTINS = (
    "genlab.data", "genlab.tokenizers", "genlab.generators", "genlab.samplers", "genlab.evals", "genlab.tasks",
    "genlab.imports",
)  # fmt: skip

_ENTRIES: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_loaded = False


def load_builtins() -> None:
    """Import the built-in subpackages once (they register themselves)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTINS:
            importlib.import_module(module)


class RegistryError(KeyError):
    """An unknown kind or name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _check_kind(kind: str, *, lookup: bool = True) -> dict[str, Any]:
    if lookup:
        load_builtins()
    if kind not in _ENTRIES:
        raise RegistryError(f"unknown registry kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return _ENTRIES[kind]


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator: ``@register("generator", "dit")``."""
    entries = _check_kind(kind, lookup=False)

    def deco(obj: Any) -> Any:
        if name in entries and entries[name] is not obj:
            raise RegistryError(f"{kind} {name!r} is already registered by {entries[name]!r}")
        entries[name] = obj
        return obj

    return deco


def get(kind: str, name: str) -> Any:
    entries = _check_kind(kind)
    if name not in entries:
        valid = ", ".join(sorted(entries)) or "(none)"
        raise RegistryError(f"unknown {kind} {name!r}; registered {kind}s: {valid}")
    return entries[name]


def names(kind: str) -> list[str]:
    return sorted(_check_kind(kind))


def build(kind: str, name: str, cfg: Any = None, **kwargs: Any) -> Any:
    """Instantiate a registered class: ``cls(cfg, **kwargs)`` (``cls(**kwargs)`` without cfg)."""
    cls = get(kind, name)
    return cls(**kwargs) if cfg is None else cls(cfg, **kwargs)
