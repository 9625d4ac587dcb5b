"""Sampler against sampler on one DDPM run (issue 21): DDPM-250, DDIM-50, Euler-50 and DPM-Solver++-20 on the
same ε-model (``objective: ddpm``; the flow samplers drive it through its velocity, docs/checkpoints.md).

The run: ``configs/ddpm-samplers.yaml`` (smoke-ddpm's DiT at depth 4 / width 128 on 32x32 OpenMoji, 800 steps).

    python benchmarks/ddpm_samplers.py [--run RUN] [--n 500]    # trains RUN unless it exists; writes results/

Each row is ``genlab eval --run RUN --n N --metrics fid --sampler S --steps K`` (cfg 1: no guidance; image i of
class i % 9 from seed i, the same noise for every sampler) against the training set's statistics, plus
``genlab sample`` of a small grid with the same sampler. FID from N = 500 images is biased upwards and noisy: compare
rows of this file, not with papers. Seconds are wall-clock on a shared machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).resolve().parent / "configs" / "ddpm-samplers.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (("ddpm", 250), ("ddim", 50), ("euler", 50), ("dpm++", 20))


def genlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]] if Path("/proc/loadavg").exists() else []


def row(run: str, sampler: str, steps: int, n: int, grid: str) -> dict:
    """FID of ``n`` images from ``sampler`` at ``steps`` (genlab eval), and a grid sampled with it (genlab sample)."""
    t0, load = time.time(), loadavg()
    done = genlab("eval", "--run", run, "--n", str(n), "--metrics", "fid", "--json", "--sampler", sampler,
                  "--steps", str(steps), "--cfg", "1")  # fmt: skip
    if done.returncode:
        raise SystemExit(f"genlab eval --sampler {sampler} failed ({done.returncode})")
    seconds = time.time() - t0
    sample = genlab("sample", "--run", run, "--n", "2", "--sampler", sampler, "--steps", str(steps), "--out", grid)
    return {"sampler": sampler, "steps": steps, "fid": json.loads(done.stdout)["fid"], "n": n,
            "eval_seconds": round(seconds, 1), "loadavg_before": load, "loadavg_after": loadavg(),
            "sample_status": sample.returncode}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/ddpm-samplers")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    run = Path(args.run) if Path(args.run).is_absolute() else ROOT / args.run
    if not (run / "generator" / "model.safetensors").is_file():
        if genlab("train", "--preset", str(CONFIG), "--out", str(run)).returncode:
            raise SystemExit("training failed")
    rows = [row(str(run), s, k, args.n, str(run / f"samples-{s.replace('+', 'p')}-{k}.png")) for s, k in ROWS]
    out = {"benchmark": "ddpm_samplers", "run": str(args.run), "config": str(CONFIG.relative_to(ROOT)),
           "n": args.n, "reference": "the run's training set (genlab eval's default)", "rows": rows,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "note": "wall-clock under load"}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ddpm_samplers-cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['sampler']:>6}-{r['steps']:<4} FID {r['fid']:.1f}  ({r['eval_seconds']} s)")


if __name__ == "__main__":
    main()
