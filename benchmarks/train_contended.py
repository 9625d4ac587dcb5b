"""Quickstart training images/s alone and beside one busy process, for genlab's thread default and the old one.

    python benchmarks/train_contended.py                 # ~2 minutes on a 2-core CPU; writes benchmarks/results/
    python benchmarks/train_contended.py --steps 40 --policies old,default,1-thread

Each measurement is a fresh ``genlab train`` process (libgomp reads its settings once, when torch loads) on the
preset (``quickstart`` by default: the DiT, data, batch and bf16 of ``make quickstart``), logging every step; it is
stopped once ``--warmup`` + ``--steps`` steps are logged (the final grid and export are not measured), and the
rate is images over the wall time of the steps after the warm-up. "contended"
runs the same beside ``python3 -c "while True: pass"``, started before the worker and killed after it. A
measurement stops after ``--max-seconds`` of training (warm-up included) even if its steps are not done (the old
policy under contention is ~20x slower) and reports the steps it timed; stopped within the warm-up, it times the
steps after the first (``after_warmup: false``).

Policies: ``default`` is ``python -m genlab train`` as a user runs it (``genlab.threads.configure()``:
GOMP_SPINCOUNT=1000); ``old`` is torch's OpenMP as it comes (OMP_WAIT_POLICY unset, torch imported before
genlab's entry point: waiting threads spin); ``1-thread`` is ``old`` with
OMP_NUM_THREADS=1. ``--threads N`` sets OMP_NUM_THREADS for the others (default: torch's, one per core).
The target of issue 15: contended >= 50% of alone, and the default's alone rate within 5% of the old one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BUSY = "while True: pass"
POLICIES = ("old", "default", "1-thread")


# the old behaviour: torch (so libgomp, which reads OMP_WAIT_POLICY once, when it loads) before genlab's default
OLD_ENTRY = "import sys, torch; from genlab.cli import main; sys.exit(main(sys.argv[1:]))"


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _records(path: Path) -> list[dict]:
    """The complete records of a metrics.jsonl that may be half-written."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def measure(args: argparse.Namespace, policy: str, contended: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "TQDM_DISABLE": "1"}  # fmt: skip
    if policy in ("old", "1-thread"):
        env.pop("OMP_WAIT_POLICY", None)
    if policy == "1-thread":
        env["OMP_NUM_THREADS"] = "1"
    elif args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    overrides = [f"train.steps={args.warmup + args.steps}", "train.log_every=1", "train.checkpoint_every=0",
                 "train.sample_every=0", "train.tensorboard=false"]  # fmt: skip
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if contended else None
    try:
        with tempfile.TemporaryDirectory(prefix="genlab-contended-") as tmp:
            out = Path(tmp) / "run"
            entry = ["-m", "genlab"] if policy == "default" else ["-c", OLD_ENTRY]
            cmd = [sys.executable, *entry, "train", "--preset", args.preset, *overrides, "--out", str(out)]
            log = open(Path(tmp) / "worker.log", "w+")  # the worker's progress bar and any traceback
            cpu_before = _children_cpu()
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
            first, started = None, time.monotonic()
            while proc.poll() is None:
                time.sleep(0.5)
                recs = _records(out / "metrics.jsonl")
                if first is None and recs:
                    first = time.monotonic()
                done = len(recs) >= args.warmup + args.steps  # the final grid and export are not measured
                if done or (first is not None and time.monotonic() - first > args.max_seconds):
                    proc.kill()
                    proc.wait()
            wall = time.monotonic() - started
            cpu = _children_cpu() - cpu_before  # the worker's CPU time (spinning threads burn it); busy is alive
            recs = _records(out / "metrics.jsonl")
            log.seek(0)
            if proc.returncode not in (0, -9) or not recs:
                raise SystemExit(f"the {policy} worker failed (exit {proc.returncode}):\n{log.read()[-3000:]}")
            log.close()
            batch = yaml.safe_load((out / "config.yaml").read_text())["train"]["batch_size"]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    timed = [r for r in recs if r["step"] > args.warmup]
    warm = bool(timed)
    if not timed:  # stopped during the warm-up (a collapsed rate): time what there is, but the first step
        timed = [r for r in recs if r["step"] > 1]
    row = {"policy": policy, "contended": contended, "threads": env.get("OMP_NUM_THREADS", "torch default"),
           "batch_size": batch, "worker_wall_s": round(wall, 1), "worker_cpu_s": round(cpu, 1)}  # fmt: skip
    if not timed:
        return {**row, "steps": 0, "img_per_s": None}
    seconds = sum(batch / r["img_per_s"] for r in timed)  # each record is one step's own time
    return {**row, "steps": len(timed), "after_warmup": warm, "seconds": round(seconds, 2),
            "img_per_s": round(batch * len(timed) / seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after the warm-up)")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--max-seconds", type=float, default=45.0, help="stop a measurement after this much training")
    p.add_argument("--policies", default="old,default", help=f"comma-separated, from {', '.join(POLICIES)}")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for old/default (default: torch's, one per core)")
    p.add_argument("--preset", default="quickstart")
    p.add_argument("--out", help="the result file (default: benchmarks/results/train_contended-cpu.json)")
    args = p.parse_args(argv)
    policies = [s.strip() for s in args.policies.split(",") if s.strip()]
    for name in policies:
        if name not in POLICIES:
            p.error(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    load_before = os.getloadavg()
    t0 = time.time()
    rows = []
    for policy in policies:
        for contended in (False, True):
            row = measure(args, policy, contended)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    summary = {}
    for policy in policies:
        alone, busy = (next(r for r in rows if r["policy"] == policy and r["contended"] is c) for c in (False, True))
        ok = alone["img_per_s"] and busy["img_per_s"]
        summary[policy] = {"alone": alone["img_per_s"], "contended": busy["img_per_s"],
                           "contended_over_alone": round(busy["img_per_s"] / alone["img_per_s"], 3) if ok else None}  # fmt: skip
    if "old" in summary and "default" in summary and summary["old"]["alone"] and summary["default"]["alone"]:
        summary["default_alone_over_old_alone"] = round(summary["default"]["alone"] / summary["old"]["alone"], 3)
    result = {
        "benchmark": "train_contended",
        "preset": args.preset,
        "steps": args.steps,
        "warmup": args.warmup,
        "max_seconds": args.max_seconds,
        "busy_process": f'python3 -c "{BUSY}"',
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "wall_seconds": round(time.time() - t0, 1),
        "summary": summary,
        "measurements": rows,
    }
    out = Path(args.out) if args.out else RESULTS / "train_contended-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
