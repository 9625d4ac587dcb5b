"""``genlab data pack|verify``: an ImageNet-style folder as streamable shards (``genlab.data.shards``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    d = sub.add_parser("data", help="pack an image folder into streamable shards, or verify shards",
                       description="pack: write an ImageNet-style folder (ROOT/[train/]<class>/<images>) as WebDataset-"
                       "layout tar shards with a genlab index (train on them with data.name=shards data.root=SHARDS); "
                       "an interrupted pack continues when the same command runs again. verify: hash every shard "
                       "against its manifest.")  # fmt: skip
    d.add_argument("action", choices=["pack", "verify"])
    d.add_argument("path", help="pack: the image folder; verify: the shards folder (or fsspec URL)")
    d.add_argument("--out", help="pack: the shards folder to write")
    d.add_argument("--resolution", type=int, default=256,
                   help="pack: store the ADM center crop at this side as PNG (the folder's pixels exactly; default "
                   "256); 0 stores the original files, cropped when read")  # fmt: skip
    d.add_argument("--split", default="train", help="pack: the split folder under PATH if it exists (default train)")
    d.add_argument("--num-classes", type=int, default=0, help="pack: expected class folders (0: any, the default)")
    d.add_argument("--per-shard", type=int, default=5000, help="pack: images per shard (default 5000)")
    d.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from genlab.data import shards

    if args.action == "verify":
        n = shards.verify(args.path)
        print(f"{args.path}: {n} shards match their sha256")
        return 0
    if not args.out:
        raise UsageError("pack needs --out SHARDS (the folder to write)")
    if args.resolution != 0 and args.resolution < 8:
        raise UsageError(f"--resolution must be 0 (the original files) or >= 8, got {args.resolution}")
    if not 1 <= args.per_shard <= 10**7:
        raise UsageError(f"--per-shard must be in [1, 10000000], got {args.per_shard}")
    if args.num_classes < 0:
        raise UsageError(f"--num-classes must be >= 0, got {args.num_classes}")
    if Path(args.out).resolve() == Path(args.path).resolve():
        raise UsageError("--out must not be the image folder itself")
    from genlab.data.imagefolder import ImageFolderDataset

    cfg = ImageFolderDataset.Config(root=args.path, resolution=max(args.resolution, 8), split=args.split,
                                    num_classes=args.num_classes, hflip=False)  # fmt: skip
    manifest = shards.pack(ImageFolderDataset(cfg), args.out, resolution=args.resolution, per_shard=args.per_shard)
    size = sum(s["bytes"] for s in manifest["shards"]) / 2**20
    print(f"{manifest['num_samples']} images of {len(manifest['class_names'])} classes -> {len(manifest['shards'])} "
          f"shards ({size:.1f} MiB) in {args.out}; train with data.name=shards data.root={args.out}")  # fmt: skip
    return 0
