"""``genlab sample``: images from a trained run, as a PNG grid or an .npz batch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genlab.cli.errors import UsageError
from genlab.cli.options import add_option_flags, add_precision_flag, given_options


def add_parser(sub) -> None:
    s = sub.add_parser(
        "sample", help="sample images from a trained run", description="Sample images from a trained run."
    )
    s.add_argument("--run", required=True, help="run directory written by `genlab train`")
    s.add_argument("--classes", default="all", help="class ids or names, comma-separated, or 'all' (default)")
    s.add_argument("--n", type=int, default=8, help="images per class (default 8)")
    s.add_argument(
        "--refiner", metavar="DIR", help="a FlowTurbo refiner run (`genlab train --preset flowturbo-refiner`)"
    )
    s.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    s.add_argument("--out", default="samples.png", help="output .png grid or .npz batch")
    s.add_argument("--format", choices=["png", "npz"], help="default: from the --out suffix")
    s.add_argument("--batch-size", type=int, default=64, help="images per forward batch (does not change the images)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_precision_flag(s)
    add_option_flags(s)
    s.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from genlab.pipeline import Pipeline, save_grid

    if args.n <= 0:
        raise UsageError(f"--n must be positive, got {args.n}")
    from genlab import inputs

    try:  # before the label list (--n per class) is built or the run is loaded
        inputs.check_count(args.n, "--n (images per class)")
        inputs.check_seed(args.seed, args.n)
        inputs.check_device(args.device)
        inputs.check_count(args.batch_size, "--batch-size", 4096)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    if out.is_dir():  # before any work: a folder is no file to write
        raise UsageError(f"--out {out} is a directory; name the file to write (e.g. {out / 'samples.png'})")
    given = given_options(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if given.get("compile") and device == "cpu":
        print("genlab sample: --compile is for GPUs; sampling eagerly on the CPU", file=sys.stderr)
        given.pop("compile")
    pipe = Pipeline.load(args.run, device=device)
    if args.refiner:
        from genlab.tasks.refiner import attach_refiner

        attach_refiner(pipe, args.refiner)
    try:
        classes = pipe.class_ids(args.classes)
        options = pipe.sample_options(given)
    except ValueError as e:
        raise UsageError(str(e)) from None
    labels = [c for c in classes for _ in range(args.n)]
    fmt = args.format or ("npz" if out.suffix == ".npz" else "png")
    if fmt == "npz" and pipe.tokenizer.token_spec.size("time") is not None:
        raise UsageError("--format npz holds images; this run makes clips: write a .png name (a .gif and frames)")
    from PIL import Image

    known = out.suffix.lower() in Image.registered_extensions() and args.format is None  # x.jpg stays a JPEG
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "npz":  # batch by batch as uint8, shared over the processes of torchrun / accelerate launch
            result = write_npz(pipe, labels, out, seed=args.seed, options=options, batch_size=args.batch_size,
                               precision=args.precision)  # fmt: skip
            if result is None:  # not the main process
                return 0
        else:
            result = pipe.generate(
                labels, seed=args.seed, options=options, batch_size=args.batch_size, precision=args.precision
            )
            rows = [pipe.class_names[c] for c in classes]
            out = save_grid(result.images, out, nrow=args.n, row_labels=rows, fmt=None if known else "PNG")
    except ValueError as e:  # options that only the generator can check (FlowTurbo R steps without a refiner, ...)
        raise UsageError(str(e)) from None
    except OSError as e:  # a full disk (/dev/full), a read-only or vanished folder: the path and why
        raise UsageError(f"{out}: {e.strerror or e}") from None
    refined = "".join(f" + {k} {name} evaluation{'s' * (k != 1)}" for name, k in result.extra_networks().items() if k)
    print(f"{len(labels)} images, {result.nfe} NFE{refined}, {result.seconds:.1f}s -> {out}")
    return 0


def write_npz(pipe, labels: list[int], out: Path, *, seed: int, options, batch_size: int, precision: str = "fp32"):
    """Images ``labels`` (image i from seed + i) as ADM's ``.npz`` (``arr_0`` (N, H, W, 3) uint8, ``labels``).

    Kept as uint8 batch by batch (50,000 ImageNet images are 9.8 GB so, 39 GB as float). Under ``torchrun`` or
    ``accelerate launch`` every process generates its contiguous share into ``OUT.partK.npy`` and the main process
    joins them in order: the file is the same for any process count. Returns the main process's ``Generated`` (its
    ``images`` empty), None on the others."""
    import dataclasses
    import os
    import time

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from genlab.data import to_uint8
    from genlab.train import dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())  # joins the process group
    rank, size = dist.world()
    mine = dist.share(len(labels))
    parts, last, t0 = [], None, time.perf_counter()
    bar = tqdm(total=len(mine), desc="sample", unit="img", disable=rank != 0, dynamic_ncols=True)
    for start in range(mine.start, mine.stop, batch_size):
        stop = min(start + batch_size, mine.stop)
        last = pipe.generate(labels[start:stop], seed=seed + start, options=options, batch_size=batch_size,
                             precision=precision)  # fmt: skip
        parts.append(to_uint8(last.images).permute(0, 2, 3, 1).numpy())  # (b, H, W, 3) as ADM's evaluator reads
        bar.update(stop - start)
    bar.close()
    if size > 1:
        np.save(out.with_suffix(f".part{rank}.npy"), np.concatenate(parts) if parts else np.zeros((0,), np.uint8))
        torch.distributed.barrier()
        if rank != 0:
            return None
        parts = [np.load(out.with_suffix(f".part{k}.npy")) for k in range(size)]
        parts = [p for p in parts if p.size]
    np.savez(out, arr_0=np.concatenate(parts), labels=np.asarray(labels, dtype=np.int64))
    for k in range(size if size > 1 else 0):
        out.with_suffix(f".part{k}.npy").unlink()
    return dataclasses.replace(last, images=last.images[:0], labels=torch.as_tensor(labels),
                               seconds=time.perf_counter() - t0)  # fmt: skip
