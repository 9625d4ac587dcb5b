"""Miniature of VAR's claim (issue 14): on OpenMoji 32x32 (9 classes), next-scale prediction (VAR) against raster
next-token prediction (a LlamaGen-style GPT) at equal parameters, same tokenizer budget, same training budget; and
one FlexVAR model sampled at 4, 6, 8 and 10 steps (scale schedules it was and was not trained on).

Tokenizers (configs/), each the same conv net, code dimension 16, one codebook of 512, losses, 1,000 steps at batch 32:
  miniature-msvq (VAR's residual multi-scale VQ, scales 1,2,3,4,6,8), miniature-vq (one VQ of the 8x8 latent,
  64 raster tokens), miniature-flexvq (FlexVAR's non-residual maps at the same scales).
Generators (configs/), each 500 steps at batch 64 with the same optimizer, schedule, EMA and bf16:
  miniature-var (VAR depth 6, width 256), miniature-gpt (GPT depth 9, width 256, at VAR's parameter count),
  miniature-flexvar (FlexVAR with VAR's transformer).

    python benchmarks/var_vs_gpt.py [--n 1000]    # ~60 minutes on 2 cores from nothing; writes results/

Runs go to runs/miniature-* and are reused once exported (``--resume auto`` continues an interrupted
one). FID is genlab eval's (the offline Inception), --n generated images (class i % 9, seed i) against the training
set's statistics; a number for comparing rows of this file, not with the papers'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / "configs"
RESULTS = Path(__file__).resolve().parent / "results"

TOKENIZERS = {"var": (str(CONFIGS / "miniature-msvq.yaml"), "runs/miniature-msvq"),
              "gpt": (str(CONFIGS / "miniature-vq.yaml"), "runs/miniature-vq"),
              "flexvar": (str(CONFIGS / "miniature-flexvq.yaml"), "runs/miniature-flexvq")}  # fmt: skip
GENERATORS = {"var": (str(CONFIGS / "miniature-var.yaml"), "runs/miniature-var"),
              "gpt": (str(CONFIGS / "miniature-gpt.yaml"), "runs/miniature-gpt"),
              "flexvar": (str(CONFIGS / "miniature-flexvar.yaml"), "runs/miniature-flexvar")}  # fmt: skip
# FlexVAR's schedules: the tokenizer's (trained), a subset, one with sides it never trained on, and one past the
# 8x8 latent (10 steps need 10 distinct sides: a 10x10 latent, 40x40 images, resized by the Inception like the rest)
FLEX_SCHEDULES = {4: "1,2,4,8", 6: "1,2,3,4,6,8", 8: "1,2,3,4,5,6,7,8", 10: "1,2,3,4,5,6,7,8,9,10"}


def genlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE)  # fmt: skip


def train(preset: str, out: str, part: str) -> dict:
    """Train (or resume) one run unless it is exported; its step count, batch and training seconds."""
    run = ROOT / out
    t0 = time.time()
    if not (run / part / "model.safetensors").is_file():
        done = genlab("train", "--preset", preset, "--out", out, "--resume", "auto")
        if done.returncode:
            raise SystemExit(f"training {out} failed (exit {done.returncode})")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "img_per_s" in r]
    batch = yaml.safe_load((run / "config.yaml").read_text())["train"]["batch_size"]
    seconds = None
    if batch and steps:  # each record's rate covers the steps since the previous record
        seconds, last = 0.0, 0
        for r in steps:
            seconds += (r["step"] - last) * batch / r["img_per_s"]
            last = r["step"]
    return {"run": out, "steps": steps[-1]["step"] if steps else None, "batch_size": batch,
            "train_seconds": round(seconds, 1) if seconds else None, "this_call_seconds": round(time.time() - t0, 1)}  # fmt: skip


def parameters(run: str, part: str) -> int:
    with safe_open(str(ROOT / run / part / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def fid(run: str, n: int, *options: str) -> float | str:
    """FID of ``n`` images of a run, or the reason there is none (the eval's exit status: its stderr is shown)."""
    done = genlab("eval", "--run", run, "--n", str(n), "--metrics", "fid", "--json", "--log", os.devnull, *options)
    if done.returncode:
        return f"genlab eval failed (exit {done.returncode})"
    return round(json.loads(done.stdout.strip().splitlines()[-1])["fid"], 2)


def rfid(run: str) -> dict:
    done = genlab("eval", "--tokenizer", run, "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {"error": f"exit {done.returncode}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="generated images per FID")
    p.add_argument("--out", help="result file (default: benchmarks/results/var_vs_gpt-cpu.json)")
    args = p.parse_args(argv)
    load_before, t0 = os.getloadavg(), time.time()
    result: dict = {"benchmark": "var_vs_gpt", "n": args.n, "tokenizers": {}, "generators": {}, "fid": {}}
    for family, (preset, out) in TOKENIZERS.items():
        result["tokenizers"][family] = train(preset, out, "tokenizer")
    for family, (preset, out) in GENERATORS.items():
        result["generators"][family] = {**train(preset, out, "generator"), "parameters": parameters(out, "generator")}
        print(json.dumps({family: result["generators"][family]}), file=sys.stderr, flush=True)
    for family, (_, out) in TOKENIZERS.items():
        result["tokenizers"][family]["reconstruction"] = rfid(out)
    result["fid"]["var"] = fid(GENERATORS["var"][1], args.n)
    result["fid"]["gpt"] = fid(GENERATORS["gpt"][1], args.n)
    for steps, scales in FLEX_SCHEDULES.items():
        result["fid"][f"flexvar_{steps}_steps"] = fid(GENERATORS["flexvar"][1], args.n, "--scales", scales)
        print(json.dumps({f"flexvar_{steps}": result["fid"][f"flexvar_{steps}_steps"]}), file=sys.stderr, flush=True)
    result.update({"flexvar_schedules": FLEX_SCHEDULES, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                   "load_average_before": [round(x, 2) for x in load_before],
                   "load_average_after": [round(x, 2) for x in os.getloadavg()],
                   "wall_seconds": round(time.time() - t0, 1)})  # fmt: skip
    out = Path(args.out) if args.out else RESULTS / "var_vs_gpt-cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
