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
    from genlab.safeio import CorruptFileError
    from genlab.tokenizers.base import TokenizerError
    from genlab.train.trainer import TrainError

    return (
        CorruptFileError,
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
    from genlab.tasks import train_run

    cfg = config.load(args.preset, args.overrides)
    out = Path(args.out or Path("runs") / args.preset.replace("/", "-"))
    resume = args.resume
    if resume not in (None, "auto") and not Path(resume).is_dir():
        raise UsageError(
            f"--resume {resume}: no such checkpoint directory (use --resume auto or a checkpoints/step_XXXXXXX path)"
        )
    from genlab.train.runfolder_guard import check_run_folder, clear_run_outputs

    if isinstance(cfg, config.RunConfig):  # refused before any model is built (the trainer checks again)
        check_run_folder(out, cfg.to_dict(), resume=resume, overwrite=args.overwrite)
    elif args.overwrite:
        check_run_folder(out, {}, resume=resume, overwrite=True)
    if args.overwrite and (removed := clear_run_outputs(out)):
        print(f"--overwrite: deleted {', '.join(removed)} of the run in {out}", file=sys.stderr)
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
    from genlab import inputs
    from genlab.option_flags import given_options

    try:  # before the label list (--n per class) is built or the run is loaded
        inputs.check_count(args.n, "--n (images per class)")
        inputs.check_seed(args.seed, args.n)
        inputs.check_device(args.device)
        inputs.check_count(args.batch_size, "--batch-size", 4096)
    except ValueError as e:
        raise UsageError(str(e)) from None

    given = given_options(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if given.get("compile") and device == "cpu":
        print("genlab sample: --compile is for GPUs; sampling eagerly on the CPU", file=sys.stderr)
        given.pop("compile")
    pipe = Pipeline.load(args.run, device=device, refiner=args.refiner)
    try:
        classes = pipe.class_ids(args.classes)
        options = pipe.sample_options(given)
    except ValueError as e:
        raise UsageError(str(e)) from None
    labels = [c for c in classes for _ in range(args.n)]
    try:
        result = pipe.generate(labels, seed=args.seed, options=options, batch_size=args.batch_size)
    except ValueError as e:  # options that only the generator can check (FlowTurbo R steps without a refiner, ...)
        raise UsageError(str(e)) from None
    out = Path(args.out)
    fmt = args.format or ("npz" if out.suffix == ".npz" else "png")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        arr = to_uint8(result.images).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) uint8, as ADM's evaluator reads
        np.savez(out, arr_0=arr, labels=result.labels.numpy())
    else:
        save_grid(result.images, out, nrow=args.n)
    extra = result.extra_nfe
    refined = f" + {extra} refiner evaluation{'s' * (extra != 1)}" if extra else ""
    print(f"{len(labels)} images, {result.nfe} NFE{refined}, {result.seconds:.1f}s -> {out}")
    return 0


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from genlab.demo import Limits, serve

    if args.max_images <= 0 or args.max_steps <= 0:
        raise UsageError("--max-images and --max-steps must be positive")
    from genlab import inputs

    try:
        inputs.check_port(args.port)
        inputs.check_device(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
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
        from genlab.runs import RunFolder

        run = RunFolder(args.run)
        if not run.exists():
            raise RunError(f"run directory {args.run} does not exist")
        cfg = run.read_config() if run.has("config.yaml") else None
        if cfg is not None and not isinstance(cfg, config.RunConfig):
            cfg = None  # a refiner run: Pipeline.load brings its base run
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
    if args.family == "gpt":
        from genlab import bench_gpt

        result = {"train": bench_gpt.bench_train(args.seconds, args.threads, device=args.device),
                  "sample": bench_gpt.bench_sample(args.seconds, args.threads, device=args.device)}  # fmt: skip
        print(json.dumps(result, indent=2) if args.json else bench_gpt_summary(result))
        return 0
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


def bench_gpt_summary(result: dict) -> str:
    """One line per size and part: genlab's GPT against transformers' Llama."""
    lines = []
    for part, r in result.items():
        for size, row in r.get("sizes", {}).items():
            nums = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, (int, float)))
            lines.append(f"{part} {size}: {nums}")
    return "\n".join(lines) or json.dumps(result, indent=2)


# ----------------------------------------------------------------------------- import


def cmd_import(args: argparse.Namespace) -> int:
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
    t.add_argument(
        "--overwrite", action="store_true", help="delete the run already in OUT (checkpoints, outputs) first"
    )
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100")
    t.set_defaults(fn=cmd_train)

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
    from genlab.option_flags import add_option_flags

    add_option_flags(s)
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
    b.add_argument("--family", choices=["dit", "gpt"], default="dit",
                   help="train: dit (genlab's DiT vs diffusers' DiT) or gpt (genlab's GPT vs transformers' Llama, "
                        "training and KV-cached sampling)")  # fmt: skip
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

    m = sub.add_parser("import", help="a published checkpoint as a genlab run",
                       description="Turn a published checkpoint into a genlab run that samples and evaluates like any "
                                   "other. Files are read with torch.load(weights_only=True): tensors only, no code.")  # fmt: skip
    m.add_argument(
        "kind", choices=["var-vqvae", "var"], help="var-vqvae: vae_ch160v4096z32.pth; var: var_d16.pth (any depth)"
    )
    m.add_argument("path", help="the checkpoint file")
    m.add_argument("--out", required=True, help="the run directory to write (new or empty)")
    m.add_argument("--vae", help="var: its tokenizer, the VQVAE .pth or the run `genlab import var-vqvae` wrote")
    m.set_defaults(fn=cmd_import)
    return p


def cmd_list() -> int:
    from genlab import config, registry

    print("presets:", ", ".join(config.list_presets()))
    for kind in registry.KINDS:
        print(f"{kind}s:", ", ".join(registry.names(kind)) or "(none)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from genlab.safeio import file_error_line, one_line

    parser = build_parser()  # the registry imports the built-ins on its first lookup
    args = parser.parse_args(argv)
    if args.command == "info" and args.list:
        return cmd_list()
    try:
        return args.fn(args)
    except _user_errors() as e:
        print(f"genlab {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a corrupt run file or an unwritable output: one line; anything else is a bug
        line = file_error_line(e, getattr(args, "run", None) or getattr(args, "tokenizer", None))
        if line is None:
            raise
        print(f"genlab {args.command}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"genlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
