"""What an importer is (registry kind ``importer``): a published model family's checkpoints as a genlab run.

``genlab import KIND PATH --out RUN [flags]`` dispatches to ``registry.get("importer", KIND)``, a class with

- ``help``: one line for ``genlab import -h`` (the files it reads);
- ``add_arguments(parser)``: its own flags, beyond ``PATH`` and ``--out``;
- ``run(path, out, args) -> Path``: writes the run folder ``out`` (new or empty) and returns it.

Files are read with ``torch.load(..., weights_only=True)`` at most (tensors only, never pickled code). A file that
is not the checkpoint it should be is a ``CheckpointError`` (one line, exit status 2), and nothing is written.
A new importer is one file in ``genlab/imports/`` (or a plugin's) with ``@register("importer", NAME)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Protocol

# one class, raised by the shared checks (genlab/imports/checks.py) and by every importer
from genlab.imports.checks import CheckpointError

__all__ = ["CheckpointError", "Importer"]


class Importer(Protocol):
    help: str

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path: ...
