"""``genlab import KIND PATH --out RUN``: a published checkpoint as a genlab run, by a registered importer.

One sub-command per ``registry.names("importer")`` (``genlab/imports/base.py``: ``help``, ``add_arguments``,
``run``); files are read with torch.load(weights_only=True) at most: tensors only."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    from genlab import registry

    m = sub.add_parser("import", help="a published checkpoint as a genlab run",
                       description="Turn a published checkpoint into a genlab run that samples and evaluates like any "
                                   "other. Files are read with torch.load(weights_only=True): tensors only, no code.")  # fmt: skip
    kinds = m.add_subparsers(dest="kind", required=True, metavar="KIND",
                             help=", ".join(registry.names("importer")))  # fmt: skip
    for name in registry.names("importer"):
        importer = registry.get("importer", name)
        k = kinds.add_parser(name, help=importer.help, description=importer.help)
        k.add_argument("path", help="the checkpoint file or folder, as released")
        k.add_argument("--out", required=True, help="the run directory to write (new or empty)")
        importer.add_arguments(k)
        k.set_defaults(fn=run, importer=importer)


def run(args: argparse.Namespace) -> int:
    """Published checkpoints into a genlab run (loaded with torch.load(weights_only=True), never unpickled)."""
    from genlab.imports.base import CheckpointError

    if not Path(args.path).exists():
        raise UsageError(f"{args.path}: no such file or folder")

    try:
        out = args.importer.run(Path(args.path), Path(args.out), args)
    except (CheckpointError, ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"{args.kind} {args.path} -> run {out}")
    return 0
