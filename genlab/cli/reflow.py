"""``genlab reflow``: noise-sample pairs of a trained flow run, the dataset a reflow or SlimFlow run trains on
(``genlab.data.pairs``; sharded safetensors with sha256, resumable: run the same command again)."""

from __future__ import annotations

import argparse

from genlab.cli.errors import UsageError
from genlab.cli.options import add_option_flags, given_options


def add_parser(sub) -> None:
    r = sub.add_parser(
        "reflow",
        help="write noise-sample pairs of a flow run (the dataset of reflow / SlimFlow training)",
        description="Sample N pairs (noise Z0, the teacher's sample Z1 = ODE(Z0)) from a trained flow run into "
        "sharded safetensors files plus manifest.json (each shard's sha256). Pair i is class i %% classes and seed "
        "SEED+i. An interrupted command resumes when run again. Train on them with `genlab train --preset "
        "smoke-reflow teacher.run=RUN reflow.pairs=OUT`.",
    )
    r.add_argument("--run", required=True, help="the teacher: a flow run directory written by `genlab train`")
    r.add_argument("--n", type=int, required=True, help="number of pairs")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--seed", type=int, default=0, help="pair i uses seed SEED+i (default 0)")
    r.add_argument("--batch-size", type=int, default=64, help="pairs per teacher batch (does not change them)")
    r.add_argument("--shard-size", type=int, default=4096, help="pairs per shard file")
    r.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_option_flags(r)
    r.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from genlab import inputs
    from genlab.data.pairs import write_pairs
    from genlab.tasks.fewstep import TeacherConfig, _load_teacher

    try:
        inputs.check_count(args.n, "--n (pairs)", 2**40)
        inputs.check_seed(args.seed, args.n)
        inputs.check_device(args.device)
        inputs.check_count(args.batch_size, "--batch-size", 4096)
        inputs.check_count(args.shard_size, "--shard-size", 2**24)
    except ValueError as e:
        raise UsageError(str(e)) from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = _load_teacher(TeacherConfig(run=args.run), device=device)
    try:
        options = teacher.pipeline.sample_options(given_options(args))
    except ValueError as e:
        raise UsageError(str(e)) from None
    meta = {"path": str(teacher.path.resolve()), "sha256": teacher.sha256}
    manifest = write_pairs(teacher.pipeline, args.out, n=args.n, options=options, teacher=meta, seed=args.seed,
                           shard_size=args.shard_size, batch_size=args.batch_size, device=device)  # fmt: skip
    print(f"{manifest['count']} pairs of {args.run} ({options.sampler}, {options.steps} steps) in "
          f"{len(manifest['shards'])} shard(s) -> {args.out}")  # fmt: skip
    print(f"train on them with: reflow.pairs={args.out} teacher.run={args.run}")
    return 0
