"""Checkpoints published by other codebases, converted to genlab runs (``genlab import KIND PATH --out RUN``).

Each module reads a family's released files with ``torch.load(..., weights_only=True)`` at most (tensors only, no
pickled code) and writes a self-contained run folder. Importers are registry entries of kind ``importer``
(``help``, ``add_arguments(parser)``, ``run(path, out, args) -> Path``): ``var-vqvae`` and ``var`` (VAR's VQVAE
and transformers), ``dit`` (DiT's .pt), ``diffusers-dit`` (a diffusers DiT folder, e.g. ``genlab export
diffusers``'s)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.imports import diffusers_dit, dit, llamagen, sdvae, sit  # noqa: F401  (register the importers)
from genlab.imports.var import CheckpointError, import_var
from genlab.registry import register

IMPORTS = {"var-vqvae": import_var, "var": import_var}  # kind -> function(kind, path, out_dir, **options)


def _var_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", help="var: its tokenizer, the VQVAE .pth or the run `genlab import var-vqvae` wrote")
    parser.add_argument("--scales", help="VAR's patch_nums, e.g. 1,2,3,4,5,6,8,10,13,16 (default: VAR's)")
    parser.add_argument("--num-heads", type=int, default=0, help="heads when the weights do not say (VAR: depth)")


def _var_run(kind: str, path: Path, out: Path, args: argparse.Namespace) -> Path:
    from genlab.generators.var import VAR_SCALES

    try:
        scales = tuple(int(s) for s in args.scales.split(",")) if args.scales else VAR_SCALES
    except ValueError:
        raise CheckpointError(f"--scales must be integers separated by commas, got {args.scales!r}") from None
    return import_var(kind, path, out, vae=getattr(args, "vae", None), scales=scales, num_heads=args.num_heads)


@register("importer", "var-vqvae")
class VARVQVAEImporter:
    help = "VAR's multi-scale VQVAE (vae_ch160v4096z32.pth) as a tokenizer run"
    add_arguments = staticmethod(_var_arguments)

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return _var_run("var-vqvae", path, out, args)


@register("importer", "var")
class VARImporter:
    help = "VAR's transformers (var_d16.pth .. var_d30.pth) on their VQVAE (--vae)"
    add_arguments = staticmethod(_var_arguments)

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return _var_run("var", path, out, args)


__all__ = ["IMPORTS", "CheckpointError", "import_var"]
