"""``genlab import``: a published checkpoint as a genlab run (tensors only: torch.load(weights_only=True))."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    m = sub.add_parser("import", help="a published checkpoint as a genlab run",
                       description="Turn a published checkpoint into a genlab run that samples and evaluates like any "
                                   "other. Files are read with torch.load(weights_only=True): tensors only, no code.")  # fmt: skip
    m.add_argument(
        "kind", choices=["var-vqvae", "var", "titok"],
        help="var-vqvae: vae_ch160v4096z32.pth; var: var_d16.pth (any depth); titok: a single-stage TiTok's "
        "model.safetensors (config.json beside it)",
    )  # fmt: skip
    m.add_argument("path", help="the checkpoint file")
    m.add_argument("--out", required=True, help="the run directory to write (new or empty)")
    m.add_argument("--vae", help="var: its tokenizer, the VQVAE .pth or the run `genlab import var-vqvae` wrote")
    m.add_argument("--config", help="titok: the hub's config.json (default: beside the weights)")
    m.add_argument("--num-heads", type=int, default=0, help="titok: attention heads of a non-standard ViT size")
    m.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    """Published checkpoints into a genlab run (loaded with torch.load(weights_only=True), never unpickled)."""
    from genlab import registry
    from genlab.imports.var import CheckpointError, import_var

    if not Path(args.path).is_file():
        raise UsageError(f"{args.path}: no such file")

    try:
        if args.kind in registry.names("importer"):
            out = registry.get("importer", args.kind).run(Path(args.path), Path(args.out), args)
        else:
            out = import_var(args.kind, args.path, args.out, vae=args.vae)
    except (CheckpointError, ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"{args.kind} {args.path} -> run {out}")
    return 0
