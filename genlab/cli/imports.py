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
        "kind", choices=["var-vqvae", "var"], help="var-vqvae: vae_ch160v4096z32.pth; var: var_d16.pth (any depth)"
    )
    m.add_argument("path", help="the checkpoint file")
    m.add_argument("--out", required=True, help="the run directory to write (new or empty)")
    m.add_argument("--vae", help="var: its tokenizer, the VQVAE .pth or the run `genlab import var-vqvae` wrote")
    m.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    """Published checkpoints into a genlab run (loaded with torch.load(weights_only=True), never unpickled)."""
    from genlab.imports.var import CheckpointError, import_var

    if not Path(args.path).is_file():
        raise UsageError(f"{args.path}: no such file")
    try:
        out = import_var(args.kind, args.path, args.out, vae=args.vae)
    except (CheckpointError, ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"{args.kind} {args.path} -> run {out}")
    return 0
