"""``genlab bench train|sample|eval``: side-by-side speed (and quality) measurements."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
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
    b.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "sample":
        return bench_sample(args)
    if args.what == "eval":
        from genlab.cli.eval import cmd_bench_eval

        return cmd_bench_eval(args)
    if args.family == "gpt":
        from genlab.bench import gpt as bench_gpt

        result = {"train": bench_gpt.bench_train(args.seconds, args.threads, device=args.device),
                  "sample": bench_gpt.bench_sample(args.seconds, args.threads, device=args.device)}  # fmt: skip
        print(json.dumps(result, indent=2) if args.json else bench_gpt_summary(result))
        return 0
    from genlab.bench.train import bench_train

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


def bench_sample(args: argparse.Namespace) -> int:
    from genlab.bench.sample import bench_sample, format_table, plot

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
