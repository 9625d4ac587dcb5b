"""``genlab train``: train a run from a preset (any task)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a run from a preset", description="Train a run from a preset.")
    t.add_argument("--preset", required=True, help="preset name (see `genlab info --list`) or a .yaml path")
    t.add_argument("--out", help="run directory (default: runs/PRESET)")
    t.add_argument("--resume", help="'auto' (newest valid checkpoint in OUT) or a checkpoint directory")
    t.add_argument(
        "--overwrite", action="store_true", help="delete the run already in OUT (checkpoints, outputs) first"
    )
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")
    t.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from genlab import config
    from genlab.tasks import train_run

    cfg = config.load(args.preset, args.overrides)
    out = Path(args.out or Path("runs") / args.preset.replace("/", "-"))
    resume = args.resume
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise UsageError(
            f"--resume {resume}: no such checkpoint directory (use --resume auto or a checkpoints/step_XXXXXXX path)"
        )
    train_run(cfg, out, resume=resume, overwrite=args.overwrite)  # the run-folder guard, once, first
    print(f"run written to {out}")
    return 0
