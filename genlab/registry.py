"""One registry for every pluggable part of genlab.

``register(kind, name)`` decorates a class or function; ``get(kind, name)`` returns it;
``names(kind)`` lists what exists (CLI choices and parametrised tests read it).
Built-ins are registered by explicit imports in each subpackage's ``__init__``; the first lookup of any kind
imports those subpackages (``BUILTINS``), so no import order matters: ``from genlab import config;
config.load("quickstart")`` works in a fresh interpreter.

Plugins: the same first lookup then imports every module named by an entry point of the group ``genlab.plugins``
(a package's ``[project.entry-points."genlab.plugins"]``) and by ``GENLAB_PLUGINS=mod1,mod2`` (for scripts); their
``@register`` calls add to the same registry. A plugin that fails to import is a one-line ``PluginError`` naming
it. ``origin(kind, name)`` says where each entry came from ("genlab" or the plugin).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

KINDS = (
    "dataset", "tokenizer", "quantizer", "image_encoder", "generator", "objective", "sampler", "evaluator", "refiner",
    "task", "importer", "benchmark",
)  # fmt: skip
# the subpackages whose __init__ registers the built-ins (imported on the first lookup)
BUILTINS = ("genlab.data", "genlab.tokenizers", "genlab.generators", "genlab.samplers", "genlab.evals", "genlab.tasks",
            "genlab.imports", "genlab.bench")  # fmt: skip

PLUGIN_GROUP = "genlab.plugins"  # entry points: name = "a.module" (imported; it registers what it brings)
PLUGIN_ENV = "GENLAB_PLUGINS"  # comma-separated modules, for scripts and checkouts without an installed package

_ENTRIES: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_ORIGINS: dict[tuple[str, str], str] = {}
_loaded = False
_loading: str | None = None  # the plugin being imported (its registrations are recorded as its own)


class RegistryError(KeyError):
    """An unknown kind or name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class PluginError(RegistryError):
    """A plugin module that cannot be imported; the message names it and its entry point."""


def plugins() -> list[tuple[str, str]]:
    """(where it was named, module) of every plugin: the ``genlab.plugins`` entry points, then GENLAB_PLUGINS."""
    found = [(f"entry point {ep.name}", ep.value.split(":")[0].strip())
             for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)]  # fmt: skip
    found += [(PLUGIN_ENV, m.strip()) for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    seen: set[str] = set()
    return [(w, m) for w, m in found if not (m in seen or seen.add(m))]


def load_builtins() -> None:
    """Import the built-in subpackages once (they register themselves), then the plugins."""
    global _loaded, _loading
    if _loaded:
        return
    _loaded = True
    for module in BUILTINS:
        importlib.import_module(module)
    for where, module in plugins():
        _loading = f"plugin {module}"
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001  (any failure of someone else's code: one line naming it)
            first = (str(e).splitlines() or [""])[0]
            raise PluginError(f"plugin {module} ({where}) failed to import: {type(e).__name__}: {first}") from None
        finally:
            _loading = None


def origin(kind: str, name: str) -> str:
    """Where ``name`` of ``kind`` was registered: "genlab", or "plugin MODULE"."""
    get(kind, name)
    return _ORIGINS.get((kind, name), "genlab")


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
        module = getattr(obj, "__module__", "") or ""
        if _loading is not None or module.split(".")[0] != "genlab":
            _ORIGINS[(kind, name)] = _loading or f"plugin {module}"  # (a plugin imported before the first lookup)
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


def registered(kind: str) -> dict[str, Any]:
    """What is registered under ``kind`` so far, without importing the built-ins first: for composing at import
    time (a flow objective's sampling options from the samplers imported before it)."""
    return dict(_check_kind(kind, lookup=False))


def build(kind: str, name: str, cfg: Any = None, **kwargs: Any) -> Any:
    """Instantiate a registered class: ``cls(cfg, **kwargs)`` (``cls(**kwargs)`` without cfg)."""
    cls = get(kind, name)
    return cls(**kwargs) if cfg is None else cls(cfg, **kwargs)
