"""Checkpoints published by other codebases, converted to genlab runs (``genlab import KIND PATH --out RUN``).

Each module registers its importers (registry kind ``importer``, the protocol in ``genlab/imports/base.py``) and
reads a family's released files with ``torch.load(..., weights_only=True)`` at most (tensors only, no pickled code):
``var`` (VAR's VQVAE and transformers), ``titok`` (TiTok's tokenizers), ``dit``, ``diffusers-dit``, ``sit``,
``lightningdit`` (in ``sit``), ``va-vae``, ``maskgit-vqgan``, ``flexvar``, ``sd-vae``, ``llamagen-gpt``,
``llamagen-vq``, ``titok-maskgit`` (TiTok's MaskGIT generators) and ``omnitokenizer``."""

from genlab.imports import (  # noqa: F401
    diffusers_dit,
    dit,
    flexvar,
    llamagen,
    maskgit_vqgan,
    omnitokenizer,
    sdvae,
    sit,
    titok,
    titok_maskgit,
    var,
    vavae,
)
from genlab.imports.base import CheckpointError
from genlab.imports.var import import_var

__all__ = ["CheckpointError", "import_var"]
