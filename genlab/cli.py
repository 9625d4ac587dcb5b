"""The ``genlab`` command: train | sample | info | bench.

Bad input exits with status 2 and one line on stderr saying what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the command line; printed as one line, exit status 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from genlab.config import ConfigError
    from genlab.data.base import DataError
    from genlab.evals.base import EvalError
    from genlab.pipeline import RunError
    from genlab.registry import RegistryError
    from genlab.tokenizers.base import TokenizerError
    from genlab.train.trainer import TrainError

    return (UsageError, ConfigError, DataError, EvalError, RunError, RegistryError, TokenizerError, TrainError)


# ----------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from genlab import config
    from genlab.launch import train_run

    cfg = config.load(args.preset, args.overrides)
    out = Path(args.out or Path("runs") / args.preset.replace("/", "-"))
    resume = args.resume
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise UsageError(
            f"--resume {resume}: no such checkpoint directory (use --resume auto or a checkpoints/step_XXXXXXX path)"
        )
    train_run(cfg, out, resume=resume)
    print(f"run written to {out}")
    return 0


# ----------------------------------------------------------------------------- sample


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from genlab.data import to_uint8
    from genlab.pipeline import Pipeline, save_grid

    if args.n <= 0:
        raise UsageError(f"--n must be positive, got {args.n}")
    if args.steps is not None and args.steps <= 0:
        raise UsageError(f"--steps must be positive, got {args.steps}")
    if args.cfg is not None and args.cfg < 0:
        raise UsageError(f"--cfg must be >= 0 (1 = no guidance), got {args.cfg}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = Pipeline.load(args.run, device=device)
    try:
        classes = pipe.class_ids(args.classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    labels = [c for c in classes for _ in range(args.n)]
    result = pipe.generate(
        labels, seed=args.seed, steps=args.steps, cfg=args.cfg, sampler=args.sampler, batch_size=args.batch_size
    )
    out = Path(args.out)
    fmt = args.format or ("npz" if out.suffix == ".npz" else "png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        arr = to_uint8(result.images).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) uint8, as ADM's evaluator reads
        np.savez(out, arr_0=arr, labels=result.labels.numpy())
    else:
        save_grid(result.images, out, nrow=args.n)
    print(f"{len(labels)} images, {result.nfe} NFE, {result.seconds:.1f}s -> {out}")
    return 0


# ----------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from genlab import config
    from genlab.pipeline import Pipeline, RunError

    if bool(args.preset) == bool(args.run):
        raise UsageError("give exactly one of --preset NAME or --run DIR")
    if args.preset:
        cfg = config.load(args.preset, args.overrides)
        pipe = Pipeline.from_config(cfg, device=torch.device("meta"))
    else:
        if not Path(args.run).is_dir():
            raise RunError(f"run directory {args.run} does not exist")
        pipe = Pipeline.load(args.run)
        cfg = pipe.cfg
    info = {"params": pipe.param_counts(), "config": cfg.to_dict()}
    if args.json:
        print(json.dumps(info))
    else:
        import yaml

        for part, n in info["params"].items():
            print(f"{part:>10}: {n:,} parameters ({n / 1e6:.2f}M)")
        print(yaml.safe_dump(info["config"], sort_keys=False), end="")
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "eval":
        from genlab.evalcmd import cmd_bench_eval

        return cmd_bench_eval(args)
    from genlab.bench import bench_train

    result = bench_train(seconds=args.seconds, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for size, r in result["sizes"].items():
            print(
                f"{size}: genlab {r['genlab_img_s']:.1f} img/s, diffusers {r['diffusers_img_s']:.1f} img/s, ratio {r['ratio']:.2f}"
            )
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from genlab import __version__

    p = argparse.ArgumentParser(prog="genlab", description="genlab: class-conditional image generation workbench")
    p.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a run from a preset", description="Train a run from a preset.")
    t.add_argument("--preset", required=True, help="preset name (see `genlab info --list`) or a .yaml path")
    t.add_argument("--out", help="run directory (default: runs/PRESET)")
    t.add_argument("--resume", help="'auto' (newest valid checkpoint in OUT) or a checkpoint directory")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "sample", help="sample images from a trained run", description="Sample images from a trained run."
    )
    s.add_argument("--run", required=True, help="run directory written by `genlab train`")
    s.add_argument("--classes", default="all", help="class ids or names, comma-separated, or 'all' (default)")
    s.add_argument("--n", type=int, default=8, help="images per class (default 8)")
    s.add_argument("--steps", type=int, help="sampler steps (default: the run's sample.steps)")
    s.add_argument("--cfg", type=float, help="guidance scale, 1 = none (default: the run's sample.cfg)")
    s.add_argument("--sampler", help="sampler name (default: the run's sample.sampler)")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    s.add_argument("--out", default="samples.png", help="output .png grid or .npz batch")
    s.add_argument("--format", choices=["png", "npz"], help="default: from the --out suffix")
    s.add_argument("--batch-size", type=int, default=64, help="images per forward batch (does not change the images)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.set_defaults(fn=cmd_sample)

    from genlab.evalcmd import add_eval_parser

    add_eval_parser(sub)

    i = sub.add_parser(
        "info",
        help="resolved config and parameter counts",
        description="Show a preset's or run's config and parameter counts.",
    )
    i.add_argument("--preset", help="preset name or .yaml path")
    i.add_argument("--run", help="run directory")
    i.add_argument("--json", action="store_true", help='one JSON object: {"params": {...}, "config": {...}}')
    i.add_argument("--list", action="store_true", help="list the shipped presets and registered components")
    i.add_argument("overrides", nargs="*", metavar="key=value")
    i.set_defaults(fn=cmd_info)

    b = sub.add_parser("bench", help="benchmarks", description="Benchmarks.")
    b.add_argument("what", choices=["train", "eval"],
                   help="train: training img/s of genlab's DiT vs diffusers' DiT; "
                   "eval: genlab eval's img/s vs torch-fidelity's calculate_metrics")  # fmt: skip
    b.add_argument("--n", type=int, default=500, help="eval: generated images to evaluate (default 500)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--seconds", type=float, default=15.0, help="timing budget per model and size")
    b.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    b.set_defaults(fn=cmd_bench)
    return p


def cmd_list() -> int:
    from genlab import config, registry

    print("presets:", ", ".join(config.list_presets()))
    for kind in registry.KINDS:
        print(f"{kind}s:", ", ".join(registry.names(kind)) or "(none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    import genlab.data  # noqa: F401  (register the built-ins)
    import genlab.evals  # noqa: F401
    import genlab.generators  # noqa: F401
    import genlab.samplers  # noqa: F401
    import genlab.tokenizers  # noqa: F401

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "info" and args.list:
        return cmd_list()
    try:
        return args.fn(args)
    except _user_errors() as e:
        print(f"genlab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
