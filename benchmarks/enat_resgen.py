"""Miniatures of ENAT's and ResGen's claims (issue 22) on OpenMoji 32x32 (9 classes), one tokenizer recipe, one
training budget and one FID for every row.

ENAT vs MaskGIT on the same VQ tokens (runs/miniature-vq, benchmarks/configs/miniature-vq.yaml, var_vs_gpt's):
  miniature-enat (5 + 1 blocks, width 192) and miniature-maskgit-vq (6 blocks, width 192), each --gen-steps steps
  at batch 64, same optimizer; FID, counted GFLOPs/image and ms/image at 4, 8 and 16 decoding steps. The claim:
  ENAT reaches MaskGIT's FID at fewer GFLOPs.
ResGen as the RVQ depth grows 2 -> 4 -> 8 (runs/miniature-rqD: miniature-vq's net and codebook with a residual
  VQ of depth D, --tok-steps steps): miniature-resgen on the stacks and miniature-maskgit-flat (MaskGIT) on the
  same tokenizer's depth-flattened tokens (h*w*D ids: the same weights, flatten_depth: true); FID at 8 steps,
  GFLOPs/image, ms/image, and the tokenizer's reconstruction FID. The claim: ResGen's steps and cost do not grow
  with the depth while fidelity does.

    nice -n 10 python benchmarks/enat_resgen.py                       # the real budget (hours on a busy 2-core box)
    python benchmarks/enat_resgen.py --tok-steps 4 --gen-steps 4 --n 16 --runs /tmp/x --out /tmp/x.json  # a check
    python benchmarks/enat_resgen.py --cost-only    # GFLOPs and ms/image of every row at random weights, minutes

Runs go to --runs (default runs/) as miniature-*, reused once exported. FID is genlab eval's (offline Inception),
--n images (class i % 9, seed i) against the training set's statistics: for comparing rows here, not with papers.
ms/image are wall-clock on this machine: the JSON holds the load average beside them ("under load").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from var_vs_gpt import ROOT, fid, genlab, parameters, rfid, train  # noqa: E402  (the sibling miniature's helpers)

CONFIGS, RESULTS = HERE / "configs", HERE / "results"
DEPTHS = (2, 4, 8)
ENAT_STEPS = (4, 8, 16)


def train_run(config: str, out: str, part: str, steps: int, *overrides: str) -> dict:
    """``train`` with the budget and overrides given on the command line (var_vs_gpt's helper takes a preset)."""
    args = (f"train.steps={steps}", *overrides)
    run = ROOT / out if not Path(out).is_absolute() else Path(out)
    if not (run / part / "model.safetensors").is_file():
        done = genlab("train", "--preset", str(CONFIGS / config), "--out", str(run), "--resume", "auto", *args)
        if done.returncode:
            raise SystemExit(f"training {out} failed (exit {done.returncode})")
    return {**train(str(CONFIGS / config), str(run), part), "parameters": parameters(str(run), part)}


def flattened(rq_run: Path) -> Path:
    """A tokenizer folder with ``rq_run``'s weights and flatten_depth: true (the depth-flattened view)."""
    out = rq_run.parent / f"{rq_run.name}-flat"
    if not (out / "tokenizer" / "model.safetensors").is_file():
        (out / "tokenizer").mkdir(parents=True, exist_ok=True)
        spec = json.loads((rq_run / "tokenizer" / "config.json").read_text())
        (out / "tokenizer" / "config.json").write_text(json.dumps({**spec, "flatten_depth": True}, indent=2))
        shutil.copy(rq_run / "tokenizer" / "model.safetensors", out / "tokenizer" / "model.safetensors")
    return out


def speed_and_cost(run: Path, steps: int, n_time: int, **options) -> dict:
    """Counted GFLOPs/image (genlab.bench.cost, 2 images) and ms/image (n_time images at batch 16, after a
    warm-up) at ``steps`` decoding steps, with the load average of the timing."""
    import torch

    from genlab.bench.cost import count_sampling
    from genlab.pipeline import Pipeline

    pipe = Pipeline.load(run)
    opts = {"steps": steps, **options}
    cost = count_sampling(pipe, options=opts)
    labels = [i % len(pipe.class_names) for i in range(n_time)]
    with torch.inference_mode():
        pipe.generate(labels[:16], options=opts, batch_size=16)
        t0 = time.perf_counter()
        pipe.generate(labels, options=opts, batch_size=16)
        sec = time.perf_counter() - t0
    return {"steps": steps, "nfe": cost["nfe"], "gflops_per_image": round(cost["gflops_per_image"], 5),
            "generator_gflops_per_image": round(cost["generator_gflops_per_image"], 5),
            "ms_per_image_under_load": round(1000 * sec / n_time, 3),
            "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def untrained(config: str, tokenizer: str, *overrides: str, flatten: bool = False):
    """A row's pipeline at random weights (``--cost-only``): GFLOPs and the decoding work do not depend on them."""
    import torch

    from genlab import config as configs
    from genlab.pipeline import Pipeline

    cfg = configs.load(str(CONFIGS / config), ["tokenizer.name=run", "tokenizer.path=unused"])
    cfg.tokenizer = configs.load(str(CONFIGS / tokenizer), list(overrides)).tokenizer
    cfg.tokenizer.cfg.flatten_depth = flatten
    torch.manual_seed(0)
    return Pipeline.from_config(cfg).eval()


def cost_only(args, result: dict) -> None:
    """Counted GFLOPs/image and ms/image of every row at random weights (no training, no FID)."""
    import tempfile

    def measure(pipe, steps: int, **options) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            pipe.save(Path(tmp) / "run")
            return speed_and_cost(Path(tmp) / "run", steps, args.n_time, **options)

    for name in ("enat", "maskgit-vq"):
        pipe = untrained(f"miniature-{name}.yaml", "miniature-vq.yaml")
        result["enat_vs_maskgit"][name] = [measure(pipe, s) for s in ENAT_STEPS]
        result["generators"][name] = {"parameters": pipe.param_counts()["generator"]}
        print(json.dumps({name: result["enat_vs_maskgit"][name]}), file=sys.stderr, flush=True)
    pipe = untrained("miniature-enat.yaml", "miniature-vq.yaml")
    result["enat_vs_maskgit"]["enat_no_reuse"] = [measure(pipe, 8, no_reuse=True)]
    for d in DEPTHS:
        for name, flat in (("resgen", False), ("maskgit-flat", True)):
            config = "miniature-resgen.yaml" if name == "resgen" else "miniature-maskgit-flat.yaml"
            pipe = untrained(config, "miniature-rq.yaml", f"tokenizer.quantizer.depth={d}", flatten=flat)
            result["resgen_vs_depth"][f"{name}-rq{d}"] = measure(pipe, 8)
            result["generators"][f"{name}-rq{d}"] = {"parameters": pipe.param_counts()["generator"]}
            print(json.dumps({f"{name}-rq{d}": result["resgen_vs_depth"][f"{name}-rq{d}"]}), file=sys.stderr)


def row(run: Path, steps: int, args, **options) -> dict:
    """One measured row; kept in ``--rows`` (one JSON line per row) and reused from it when the script is run
    again, so an interrupted run loses at most the row it was measuring."""
    key = json.dumps({"run": str(run), "steps": steps, "n": args.n, "options": options}, sort_keys=True)
    done = _done_rows(args.rows)
    if key in done:
        return done[key]
    extra = [f"--{k.replace('_', '-')}" for k, v in options.items() if v is True]
    out = {**speed_and_cost(run, steps, args.n_time, **options), "fid": fid(str(run), args.n, "--steps", str(steps),
                                                                              *extra)}  # fmt: skip
    print(json.dumps({run.name: out}), file=sys.stderr, flush=True)
    if args.rows:
        with open(args.rows, "a") as f:
            f.write(json.dumps({"key": key, "row": out}) + "\n")
    return out


def _done_rows(path: str | None) -> dict:
    if not path or not Path(path).is_file():
        return {}
    lines = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return {x["key"]: x["row"] for x in lines}


def enat_part(args, runs: Path, result: dict) -> None:
    result["tokenizers"]["vq"] = {**train_run("miniature-vq.yaml", str(runs / "miniature-vq"), "tokenizer",
                                              args.tok_steps), "reconstruction": rfid(str(runs / "miniature-vq"))}  # fmt: skip
    vq = f"tokenizer.path={runs / 'miniature-vq'}"
    for name in ("enat", "maskgit-vq"):
        run = runs / f"miniature-{name}"
        result["generators"][name] = train_run(f"miniature-{name}.yaml", str(run), "generator", args.gen_steps, vq)
        result["enat_vs_maskgit"][name] = [row(run, s, args) for s in ENAT_STEPS]
    result["enat_vs_maskgit"]["enat_no_reuse"] = [row(runs / "miniature-enat", 8, args, no_reuse=True)]


def resgen_part(args, runs: Path, result: dict) -> None:
    for d in args.depths:
        rq = runs / f"miniature-rq{d}"
        tok = train_run("miniature-rq.yaml", str(rq), "tokenizer", args.tok_steps, f"tokenizer.quantizer.depth={d}")
        result["tokenizers"][f"rq{d}"] = {**tok, "reconstruction": rfid(str(rq))}
        for name, path in (("resgen", rq), ("maskgit-flat", flattened(rq))):
            run = runs / f"miniature-{name}-rq{d}"
            config = "miniature-resgen.yaml" if name == "resgen" else "miniature-maskgit-flat.yaml"
            gen = train_run(config, str(run), "generator", args.gen_steps, f"tokenizer.path={path}")
            result["generators"][f"{name}-rq{d}"] = gen
            result["resgen_vs_depth"][f"{name}-rq{d}"] = row(run, 8, args)


def _depths(value: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(d) for d in value.split(","))
    except ValueError:
        depths = ()
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers of at least 1, got {value!r}")
    return depths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="generated images per FID")
    p.add_argument("--n-time", type=int, default=64, help="images per ms/image timing (batch 16)")
    p.add_argument("--tok-steps", type=int, default=1000, help="training steps of each tokenizer (batch 32)")
    p.add_argument("--gen-steps", type=int, default=1000, help="training steps of each generator (batch 64)")
    p.add_argument("--runs", default="runs", help="where the runs go (default runs/)")
    p.add_argument(
        "--depths",
        type=_depths,
        default=DEPTHS,
        help=f"comma-separated RVQ depths of the ResGen part (default {','.join(map(str, DEPTHS))})",
    )
    p.add_argument("--part", choices=["all", "enat", "resgen"], default="all")
    p.add_argument(
        "--cost-only",
        action="store_true",
        help="GFLOPs/image and ms/image of every row at random weights: no training, no FID (minutes)",
    )
    p.add_argument("--out", help="result file (default: benchmarks/results/enat_resgen-cpu.json)")
    p.add_argument("--rows", help="a JSON-lines file of measured rows, appended and reused on a rerun (resume)")
    args = p.parse_args(argv)
    runs = Path(args.runs) if Path(args.runs).is_absolute() else ROOT / args.runs
    load_before, t0 = os.getloadavg(), time.time()
    result: dict = {"benchmark": "enat_resgen", "n": args.n, "n_time": args.n_time,
                    "budget": {"tokenizer_steps": args.tok_steps, "tokenizer_batch": 32,
                               "generator_steps": args.gen_steps, "generator_batch": 64},
                    "tokenizers": {}, "generators": {}, "enat_vs_maskgit": {}, "resgen_vs_depth": {}}  # fmt: skip
    if args.cost_only:
        result["budget"] = "none: --cost-only (random weights; FID not measured)"
        cost_only(args, result)
    if args.part in ("all", "enat") and not args.cost_only:
        enat_part(args, runs, result)
    if args.part in ("all", "resgen") and not args.cost_only:
        resgen_part(args, runs, result)
    result.update({"cpu_count": os.cpu_count(), "python": platform.python_version(),
                   "load_average_before": [round(x, 2) for x in load_before],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()],
                   "wall_seconds": round(time.time() - t0, 1),
                   "note": "ms_per_image_under_load: wall-clock on a shared machine (see load_average); FID and "
                           "GFLOPs do not depend on the load"})  # fmt: skip
    out = Path(args.out) if args.out else RESULTS / "enat_resgen-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
