"""Miniatures of LaMamba-Diff's and DiMR's claims (issue 25) on OpenMoji 32x32 pixels (9 classes), one training
budget for every run (``--steps`` at batch 64, the same optimizer, schedule, EMA and bf16; configs/miniature-*.yaml):

- LaMamba-Diff vs DiT at matched counted GFLOPs (DiT depth 6 width 256 patch 4: 0.638; LaMamba-Diff widths
  120/240/240, depths [2, 2, 2], patch 4: 0.637): FID, and sampling ms per image side by side in one process;
- DiMR vs DiT at matched parameters with a large patch (DiT patch 8: 7.47M; DiMR Transformer at patch 8 +
  ConvNeXt at patch 2: 7.30M): FID, and grids (runs/miniature-*/grid.png) to look at for patch-edge distortion;
- TD-LN vs adaLN-Zero on DiT-p4 at equal steps: FID and the parameter difference.

    python benchmarks/lamamba_dimr.py [--steps 600] [--n 500] [--out FILE]   # writes results/lamamba_dimr-cpu.json
    python benchmarks/lamamba_dimr.py --only dit-p4,dit-p8,dimr,dit-p4-tdln   # a subset (LaMamba is the slow one on a CPU)

Runs go to runs/miniature-* (``--runs-dir`` to put them elsewhere) and are reused once exported. FID is genlab
eval's (the offline Inception) of --n images (class i % 9, seed i) against the training set's statistics: a number
for comparing rows of this file, not the papers'. Speed numbers are under whatever load the machine has: the load
average is recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's genlab in this process too, as in the genlab commands it runs
CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = ("dit-p4", "lamamba", "dit-p8", "dimr", "dit-p4-tdln")


def genlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE)  # fmt: skip


def train(name: str, run: Path, steps: int) -> dict:
    """Train one miniature unless it is exported; its training seconds from the run's metrics."""
    t0 = time.time()
    if not (run / "generator" / "model.safetensors").is_file():
        overrides = [f"train.steps={steps}", f"train.warmup_steps={max(1, steps // 20)}",
                     f"train.checkpoint_every={max(1, steps // 4)}", f"train.log_every={max(1, steps // 20)}",
                     "sample.per_class=1", "sample.steps=4"]  # the end-of-training preview only; FID sets its own  # fmt: skip
        done = genlab("train", "--preset", str(CONFIGS / f"miniature-{name}.yaml"), "--out", str(run),
                      "--resume", "auto", *overrides)  # fmt: skip
        if done.returncode:
            raise SystemExit(f"training {run} failed (exit {done.returncode})")
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rates = [r for r in records if "img_per_s" in r]
    return {"run": str(run), "steps": rates[-1]["step"] if rates else None,
            "img_per_s_last": rates[-1]["img_per_s"] if rates else None,
            "this_call_seconds": round(time.time() - t0, 1)}  # fmt: skip


def counted(pipe) -> tuple[float, int]:
    """(counted GFLOPs of one batch-1 forward of the backbone, its parameters)."""
    net = pipe.generator.weights_module()
    C, h, w = pipe.tokenizer.token_spec.shape
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, C, h, w), torch.full((1,), 0.5), torch.zeros(1, dtype=torch.long))
    return round(counter.get_total_flops() / 1e9, 4), sum(p.numel() for p in net.parameters())


def fid(run: Path, n: int, steps: int) -> float | str:
    done = genlab("eval", "--run", str(run), "--n", str(n), "--metrics", "fid", "--json", "--log", os.devnull,
                  "--steps", str(steps), "--cfg", "3.0")  # fmt: skip
    if done.returncode:
        return f"genlab eval failed (exit {done.returncode})"
    return round(json.loads(done.stdout.strip().splitlines()[-1])["fid"], 2)


def ms_per_image(pipes: dict, batch: int, repeats: int, steps: int) -> dict:
    """Sampling milliseconds per image (``steps`` Euler steps, cfg 3), the models alternating in one process."""
    labels = torch.arange(batch) % 9
    best = {k: float("inf") for k in pipes}
    opts = {k: p.sample_options({"steps": steps, "cfg": 3.0}) for k, p in pipes.items()}
    for k, p in pipes.items():  # warm-up
        p.generate(labels[:2], seed=0, options=opts[k])
    for _ in range(repeats):
        for k, p in pipes.items():
            t0 = time.perf_counter()
            p.generate(labels, seed=0, options=opts[k])
            best[k] = min(best[k], time.perf_counter() - t0)
    return {k: round(1000 * v / batch, 2) for k, v in best.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="training steps of every run (batch 64)")
    p.add_argument("--n", type=int, default=500, help="generated images per FID")
    p.add_argument("--sample-steps", type=int, default=16, help="Euler steps (cfg 3) of FID, grids and timing")
    p.add_argument("--speed-batch", type=int, default=18, help="images per timed sampling batch")
    p.add_argument("--runs-dir", default=str(ROOT / "runs"), help="where the miniature runs go")
    p.add_argument("--out", help="result file (default: benchmarks/results/lamamba_dimr-cpu.json)")
    p.add_argument(
        "--only", help=f"a comma-separated subset of {','.join(RUNS)} (comparisons lacking a run are skipped)"
    )
    args = p.parse_args(argv)
    names = [k for k in RUNS if not args.only or k in args.only.split(",")]
    if args.only and set(args.only.split(",")) - set(RUNS):
        p.error(f"--only: unknown runs {sorted(set(args.only.split(',')) - set(RUNS))}; choose from {', '.join(RUNS)}")
    from genlab.pipeline import Pipeline

    load_before, t0 = os.getloadavg(), time.time()
    runs = {k: Path(args.runs_dir) / f"miniature-{k}" for k in names}
    result: dict = {"benchmark": "lamamba_dimr", "steps": args.steps, "batch_size": 64, "n": args.n,
                    "sample": {"sampler": "euler", "steps": args.sample_steps, "cfg": 3.0}, "runs": {}}  # fmt: skip
    for k in names:
        result["runs"][k] = train(k, runs[k], args.steps)
        print(json.dumps({k: result["runs"][k]}), file=sys.stderr, flush=True)
    pipes = {k: Pipeline.load(runs[k]).eval() for k in names}
    for k in names:
        gflops, params = counted(pipes[k])
        result["runs"][k].update(gflops_counted=gflops, parameters=params, fid=fid(runs[k], args.n, args.sample_steps))
        print(json.dumps({k: result["runs"][k]}), file=sys.stderr, flush=True)
        if k in ("dit-p8", "dimr", "dit-p4", "lamamba"):
            genlab("sample", "--run", str(runs[k]), "--classes", "all", "--n", "8", "--seed", "0",
                   "--steps", str(args.sample_steps), "--cfg", "3.0", "--out", str(runs[k] / "grid.png"))  # fmt: skip
    timed = [k for k in ("dit-p4", "lamamba", "dit-p8", "dimr") if k in names]
    speed_load = os.getloadavg()
    result["ms_per_image"] = ms_per_image({k: pipes[k] for k in timed}, args.speed_batch, 2, args.sample_steps)
    result["ms_per_image"].update(load_average=[round(x, 2) for x in speed_load], threads=torch.get_num_threads(),
                                  note="under load: compare the rows side by side, not with other machines")  # fmt: skip
    r = result["runs"]
    if {"dit-p4-tdln", "dit-p4"} <= set(names):
        result["parameter_difference_tdln_vs_adaln"] = r["dit-p4-tdln"]["parameters"] - r["dit-p4"]["parameters"]
    result.update(load_average_before=[round(x, 2) for x in load_before],
                  load_average_after=[round(x, 2) for x in os.getloadavg()], cpu_count=os.cpu_count(),
                  wall_seconds=round(time.time() - t0, 1))  # fmt: skip
    out = Path(args.out) if args.out else RESULTS / "lamamba_dimr-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
