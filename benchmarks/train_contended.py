"""Quickstart training images/s alone and beside one busy process, for genlab's thread default and the old one.

    python benchmarks/train_contended.py                 # ~2 minutes on a 2-core CPU; writes benchmarks/results/
    python benchmarks/train_contended.py --steps 40 --repeats 3 --policies old,default,spin1000,1-thread

Each measurement is a fresh ``genlab train`` process (libgomp reads its settings once, when torch loads) on the
preset (``quickstart`` by default: the DiT, data, batch and bf16 of ``make quickstart``), logging every step; it is
stopped once ``--warmup`` + ``--steps`` steps are logged (the final grid and export are not measured), and the
rate is images over the wall time of the steps after the warm-up. "contended"
runs the same beside ``python3 -c "while True: pass"``, started before the worker and killed after it. A
measurement stops after ``--max-seconds`` of training (warm-up included) even if its steps are not done (the old
policy under contention is ~20x slower) and reports the steps it timed; stopped within the warm-up, it times the
steps after the first (``after_warmup: false``).

Policies: ``default`` is ``python -m genlab train`` as a user runs it (libgomp as it comes, the thread count chosen
step by step by ``genlab.threads.ThreadGovernor``); ``old`` is torch's OpenMP as it comes at a fixed thread count
(OMP_NUM_THREADS = torch's default, one per core, which turns the governor off; torch imported before genlab's entry
point): what genlab did before issue 15; ``spin1000`` is ``old`` with GOMP_SPINCOUNT=1000 (genlab's first fix, the
default of the other commands); ``1-thread`` is ``old`` with OMP_NUM_THREADS=1. ``--threads N`` fixes the count for
all (no governor). ``--repeats R`` measures every policy R times, interleaved, and summarises the medians.
The target of issue 15: contended >= 50% of alone, and the default's alone rate within 5% of the old one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BUSY = "while True: pass"
POLICIES = ("old", "default", "spin1000", "1-thread")


# the old behaviour: torch (so libgomp, which reads OMP_WAIT_POLICY once, when it loads) before genlab's default
OLD_ENTRY = "import sys, torch; from genlab.cli import main; sys.exit(main(sys.argv[1:]))"


def torch_threads() -> int:
    """torch's default intra-op thread count on this machine (one per physical core)."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


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
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"):
        env.pop(key, None)
    if policy == "1-thread":
        env["OMP_NUM_THREADS"] = "1"
    elif args.threads or policy != "default":  # a fixed count: no governor
        env["OMP_NUM_THREADS"] = str(args.threads or torch_threads())
    if policy == "spin1000":
        env["GOMP_SPINCOUNT"] = "1000"
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
    if any("threads" in r for r in timed):  # the governor's choice, step by step
        row["threads_per_step"] = [r.get("threads") for r in timed]
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
    p.add_argument("--repeats", type=int, default=1, help="measure each policy this many times, interleaved; medians")
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
    for repeat in range(args.repeats):  # interleaved, so a change in the machine's load hits every policy alike
        for contended in (False, True):
            for policy in policies:
                row = {**measure(args, policy, contended), "repeat": repeat}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    summary = {}
    for policy in policies:
        alone, busy = (
            statistics.median(r["img_per_s"] or 0.0 for r in rows if r["policy"] == policy and r["contended"] is c)
            for c in (False, True)
        )
        summary[policy] = {"alone": round(alone, 1), "contended": round(busy, 1),
                           "contended_over_alone": round(busy / alone, 3) if alone else None}  # fmt: skip
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
