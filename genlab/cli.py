"""The ``genlab`` command: train | sample | eval | info | bench | demo.

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
    from genlab.demo import DemoError
    from genlab.evals.base import EvalError
    from genlab.pipeline import RunError
    from genlab.registry import RegistryError
    from genlab.tokenizers.base import TokenizerError
    from genlab.train.trainer import TrainError

    return (
        UsageError,
        ConfigError,
        DataError,
        DemoError,
        EvalError,
        RunError,
        RegistryError,
        TokenizerError,
        TrainError,
    )


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
    options = _sampler_options(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.compile and device == "cpu":
        print("genlab sample: --compile is for GPUs; sampling eagerly on the CPU", file=sys.stderr)
        options.pop("compile")
    pipe = Pipeline.load(args.run, device=device, refiner=args.refiner)
    try:
        classes = pipe.class_ids(args.classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    labels = [c for c in classes for _ in range(args.n)]
    try:
        result = pipe.generate(
            labels, seed=args.seed, steps=args.steps, cfg=args.cfg, sampler=args.sampler, batch_size=args.batch_size,
            **options,
        )  # fmt: skip
    except ValueError as e:  # sampler options that don't fit (blocks vs steps, R steps without a refiner, ...)
        raise UsageError(str(e)) from None
    out = Path(args.out)
    fmt = args.format or ("npz" if out.suffix == ".npz" else "png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        arr = to_uint8(result.images).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) uint8, as ADM's evaluator reads
        np.savez(out, arr_0=arr, labels=result.labels.numpy())
    else:
        save_grid(result.images, out, nrow=args.n, row_labels=[pipe.class_names[c] for c in classes])
    refined = (
        f" + {result.refiner_nfe} refiner evaluation{'s' * (result.refiner_nfe != 1)}" if result.refiner_nfe else ""
    )
    print(f"{len(labels)} images, {result.nfe} NFE{refined}, {result.seconds:.1f}s -> {out}")
    return 0


def _interval(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--cfg-interval must be LO,HI (e.g. 0.1,1.0), got {text!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise UsageError(f"--cfg-interval needs 0 <= LO <= HI <= 1 (t = 1 is noise), got {text!r}")
    return lo, hi


def _sampler_options(args: argparse.Namespace) -> dict:
    """Sampler and guidance options from the command line, checked before the run is loaded."""
    from genlab import registry
    from genlab.samplers import GUIDANCE_SCHEDULES, SCHEDULES, Blocks

    if args.sampler is not None:
        registry.get("sampler", args.sampler)  # an unknown name lists the registered ones
    options: dict = {"compile": bool(args.compile)}
    if args.cfg_interval is not None:
        options["guidance_interval"] = _interval(args.cfg_interval)
    if args.cfg_schedule is not None:
        if args.cfg_schedule not in GUIDANCE_SCHEDULES:
            raise UsageError(
                f"--cfg-schedule must be one of {', '.join(GUIDANCE_SCHEDULES)}, got {args.cfg_schedule!r}"
            )
        options["guidance_schedule"] = args.cfg_schedule
    if args.schedule is not None:
        if args.schedule not in SCHEDULES:
            raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {args.schedule!r}")
        options["schedule"] = args.schedule
    if args.shift is not None:
        if not args.shift > 0:
            raise UsageError(f"--shift must be positive, got {args.shift}")
        options["shift"] = args.shift
    if args.blocks is not None:
        if args.sampler != "flowturbo":
            raise UsageError("--blocks is an option of --sampler flowturbo")
        try:
            blocks = Blocks.parse(args.blocks)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if args.steps is not None and args.steps != blocks.steps:
            raise UsageError(f"--blocks {blocks} take {blocks.steps} steps, but --steps is {args.steps}")
        args.steps = blocks.steps
        options["blocks"] = blocks
    return options


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from genlab.demo import Limits, serve

    if args.max_images <= 0 or args.max_steps <= 0:
        raise UsageError("--max-images and --max-steps must be positive")
    serve(args.run, host=args.host, port=args.port, device=args.device,
          limits=Limits(max_images=args.max_images, max_steps=args.max_steps))  # fmt: skip
    return 0


# ----------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    import torch
    import yaml

    from genlab import config
    from genlab.pipeline import Pipeline, RunError

    if bool(args.preset) == bool(args.run):
        raise UsageError("give exactly one of --preset NAME or --run DIR")
    if args.preset:
        cfg = config.load(args.preset, args.overrides)
        if not isinstance(cfg, config.RunConfig):  # a refiner run: its sizes depend on its base run
            print(json.dumps({"params": {}, "config": cfg.to_dict()}) if args.json else yaml_dump(cfg.to_dict()))
            return 0
    else:
        if not Path(args.run).is_dir():
            raise RunError(f"run directory {args.run} does not exist")
        run_cfg = Path(args.run) / "config.yaml"
        cfg = config.RunConfig.from_dict(yaml.safe_load(run_cfg.read_text())) if run_cfg.is_file() else None
    if cfg is not None and cfg.task == "tokenizer":  # a tokenizer run: the tokenizer alone, counted on the meta device
        with torch.device("meta"):
            tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
        params = {"tokenizer": sum(p.numel() for p in tokenizer.parameters())}
    elif args.preset:
        params = Pipeline.from_config(cfg, device=torch.device("meta")).param_counts()
    else:
        pipe = Pipeline.load(args.run)
        cfg, params = pipe.cfg, pipe.param_counts()
    info = {"params": params, "config": cfg.to_dict()}
    if args.json:
        print(json.dumps(info))
    else:
        for part, n in info["params"].items():
            print(f"{part:>10}: {n:,} parameters ({n / 1e6:.2f}M)")
        print(yaml.safe_dump(info["config"], sort_keys=False), end="")
    return 0


# ----------------------------------------------------------------------------- eval


def yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False).rstrip()


# ----------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "sample":
        return cmd_bench_sample(args)
    if args.what == "eval":
        from genlab.evalcmd import cmd_bench_eval

        return cmd_bench_eval(args)
    from genlab.bench import bench_train

    result = bench_train(seconds=args.seconds, device=args.device, threads=args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for size, r in result["sizes"].items():
            print(
                f"{size}: genlab {r['genlab_img_s']:.1f} img/s, diffusers {r['diffusers_img_s']:.1f} img/s, ratio {r['ratio']:.2f}"
            )
    return 0


def cmd_bench_sample(args: argparse.Namespace) -> int:
    from genlab.bench_sample import bench_sample, format_table, plot

    if not args.run:
        raise UsageError("bench sample needs --run DIR (a trained run)")
    args.n = 256 if args.n is None else args.n
    if args.n < 2:
        raise UsageError(f"--n must be at least 2, got {args.n}")
    try:
        nfes = tuple(int(v) for v in args.nfe.split(","))
    except ValueError:
        raise UsageError(f"--nfe must be comma-separated integers, got {args.nfe!r}") from None
    if min(nfes) < 2:
        raise UsageError(f"--nfe values must be >= 2, got {args.nfe!r}")
    samplers = tuple(s.strip() for s in args.samplers.split(",") if s.strip())
    result = bench_sample(
        args.run, n=args.n, samplers=samplers, nfes=nfes, batch_size=args.batch_size, cfg=args.cfg,
        refiner=args.refiner, use_evals=not args.no_fid, max_batch=args.max_batch, device=args.device,
        progress=True,  # a progress bar and one line per result on stderr (--json keeps stdout clean)
    )  # fmt: skip
    message = plot(result, Path(args.plot)) if args.plot else "plot skipped: no --plot PATH"
    result["plot"] = message
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        print(message)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
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
    s.add_argument("--sampler", help="euler | heun | dpm++ | unipc | flowturbo (default: the run's sample.sampler)")
    s.add_argument(
        "--cfg-interval", "--guidance-interval", dest="cfg_interval", metavar="LO,HI",
        help="guide only for t in [LO, HI] (t = 1 is noise), e.g. 0.1,1.0 (default: the run's sample.cfg_interval)",
    )  # fmt: skip
    s.add_argument(
        "--cfg-schedule", metavar="NAME", help="guidance scale over time: constant (default), linear, cosine"
    )
    s.add_argument("--schedule", help="timestep schedule: uniform (default), logit_normal, edm")
    s.add_argument(
        "--shift", type=float, help="timestep shift s: t' = s t / (1 + (s - 1) t) (default: the run's sample.shift)"
    )
    s.add_argument("--blocks", help="flowturbo: Heun, pseudo-corrector and refiner steps, e.g. H1P5R3")
    s.add_argument(
        "--refiner", metavar="DIR", help="a FlowTurbo refiner run (`genlab train --preset flowturbo-refiner`)"
    )
    s.add_argument("--compile", action="store_true", help="torch.compile the networks (GPU; ignored on the CPU)")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    s.add_argument("--out", default="samples.png", help="output .png grid or .npz batch")
    s.add_argument("--format", choices=["png", "npz"], help="default: from the --out suffix")
    s.add_argument("--batch-size", type=int, default=64, help="images per forward batch (does not change the images)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    s.set_defaults(fn=cmd_sample)

    d = sub.add_parser(
        "demo", help="the Gradio demo app over trained runs", description="Serve trained runs in a Gradio app."
    )
    d.add_argument("--run", action="append", required=True, help="run directory; repeat for several models")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    d.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    d.add_argument("--max-images", type=int, default=16, help="images per request (default 16)")
    d.add_argument("--max-steps", type=int, default=100, help="sampler steps per request (default 100)")
    d.set_defaults(fn=cmd_demo)

    from genlab.cachecmd import add_cache_parser
    from genlab.evalcmd import add_eval_parser

    add_eval_parser(sub)
    add_cache_parser(sub)

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
    b.add_argument(
        "what",
        choices=["train", "sample", "eval"],
        help="train: training img/s of genlab's DiT vs diffusers' DiT; sample: speed/quality of every sampler; "
        "eval: genlab eval's img/s vs torch-fidelity's calculate_metrics",
    )
    b.add_argument(
        "--n", type=int, help="images: sample, per sampler and NFE (default 256); eval, in all (default 500)"
    )
    b.add_argument("--json", action="store_true")
    b.add_argument("--seconds", type=float, default=15.0, help="timing budget per size, shared by the two models")
    b.add_argument("--threads", type=int, help="CPU threads (1 gives steadier numbers on a busy machine)")
    b.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    b.add_argument("--run", help="sample: the run directory (a refiner run brings its refiner)")
    b.add_argument("--refiner", metavar="DIR", help="sample: a FlowTurbo refiner run for the run")
    b.add_argument("--nfe", default="4,8,16,32,64", help="sample: NFE values (default 4,8,16,32,64)")
    b.add_argument("--samplers", default="euler,heun,dpm++,unipc,flowturbo", help="sample: comma-separated")
    b.add_argument("--batch-size", type=int, default=8, help="sample: batch for ms/image (default 8, FlowTurbo's)")
    b.add_argument(
        "--max-batch", type=int, help="sample: largest batch for images/s (default 64 CPU, 4096 GPU; 0 skips)"
    )
    b.add_argument("--cfg", type=float, help="sample: guidance scale (default: the run's)")
    b.add_argument("--no-fid", action="store_true", help="sample: skip FID even when genlab.evals is there")
    b.add_argument("--plot", metavar="PNG", help="sample: write FID (or proxy) against ms/image (needs matplotlib)")
    b.add_argument("--out", metavar="JSON", help="sample: also write the JSON result here")
    b.set_defaults(fn=cmd_bench)
    return p


def cmd_list() -> int:
    from genlab import config, registry

    print("presets:", ", ".join(config.list_presets()))
    for kind in registry.KINDS:
        print(f"{kind}s:", ", ".join(registry.names(kind)) or "(none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from genlab import threads

    threads.configure()  # before torch is imported: OpenMP threads sleep instead of spinning (see genlab/threads.py)
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
