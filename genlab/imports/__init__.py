"""Checkpoints published by other codebases, converted to genlab runs (``genlab import KIND PATH --out RUN``).

Each module reads a family's released files with ``torch.load(..., weights_only=True)`` at most (tensors only, no
pickled code) and writes a self-contained run folder: ``var`` (VAR's VQVAE and transformers); registered
``importer`` classes (``titok``) are dispatched by name."""

from genlab.imports import titok  # noqa: F401  (registers the importer)
from genlab.imports.var import CheckpointError, import_var

IMPORTS = {"var-vqvae": import_var, "var": import_var}  # kind -> function(kind, path, out_dir, **options)

__all__ = ["IMPORTS", "CheckpointError", "import_var"]
