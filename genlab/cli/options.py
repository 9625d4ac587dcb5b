"""Sampling options as command-line flags, read from the registry (``genlab sample``, ``genlab eval``).

Every registered generator (or objective) declares its options as a ``SampleOptions`` dataclass; the flags are
their union, so a new family brings its flags with it. A value arrives as a string and is typed and checked by
the loaded run's own class (``Pipeline.sample_options``), which also refuses a flag its generator lacks.
"""

from __future__ import annotations

import argparse
from typing import Any


def option_classes() -> dict[str, type]:
    """Every registered generator's (or objective's) SampleOptions class, by the name that registers it."""
    from genlab import registry

    found = {}
    for kind in ("generator", "objective"):
        for name in registry.names(kind):
            cls = getattr(registry.get(kind, name), "SampleOptions", None)
            if cls is not None:
                found[name] = cls
    return found


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per sampling option of any registered generator, read from their SampleOptions classes
    (values are typed and checked against the loaded run's own class; a flag it lacks is an error)."""
    seen: dict[str, list[str]] = {}
    first: dict[str, Any] = {}
    for owner, cls in option_classes().items():
        for name, f in cls.fields().items():
            seen.setdefault(name, []).append(owner)
            first.setdefault(name, f)
    group = parser.add_argument_group("sampling options (defaults: the run's sample section)")
    for name, f in first.items():
        flags = [f"--{n.replace('_', '-')}" for n in (name, *f.metadata.get("aliases", ()))]
        help_text = f"{f.metadata.get('help', '')} [{', '.join(seen[name])}]"
        if f.type in ("bool", bool):
            group.add_argument(*flags, dest=f"opt_{name}", action="store_const", const=True, help=help_text)
        else:
            group.add_argument(*flags, dest=f"opt_{name}", metavar=name.upper(), help=help_text)


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the networks' compute dtype while sampling: fp32 (default, exact) or bf16 (autocast, "
                        "about 2x faster on CPUs with bf16 units and on GPUs)")  # fmt: skip


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line, by field name (strings; the run's class types them)."""
    return {k[len("opt_") :]: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
