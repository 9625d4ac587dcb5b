"""Miniature of the few-step papers' claim (issue 23): from one trained flow run as the teacher, FID at 1, 2 and 4 NFE
of a 2-rectified flow (rfpp's recipe, ``quickstart-fewstep``), SlimFlow's smaller student and a CTM, against the
teacher's own Euler and UniPC at the same NFE and at 32 NFE; ms per image at batch 8 for each.

The claim to test: at 1-2 NFE each student beats the teacher's samplers at equal NFE by a wide margin.

    python benchmarks/fewstep.py --teacher runs/quickstart [--n 1000] [--steps 600] [--pairs 2000]
    python benchmarks/fewstep.py --teacher runs/smoke --tiny       # seconds: the code path, not a result

Budgets (every one written into the result): the 2-RF is ``quickstart-fewstep`` with ``--pairs`` pairs and
``--steps`` steps; SlimFlow's student is a DiT of half the teacher's depth and width trained from scratch by
annealing reflow on the same pairs for ``--steps`` steps; the CTM starts from the teacher, ``--steps`` steps on the
teacher's data. Runs go to ``RUNS/fewstep-*`` (``--runs``, default runs/) and are reused once exported. FID is genlab eval's (the offline
Inception), ``--n`` images against the training set's statistics: for comparing rows of this file, not with the
papers'. Timings are wall-clock on this machine (the load average is recorded beside them).
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
RESULTS = Path(__file__).resolve().parent / "results"
NFES = (1, 2, 4)


def genlab(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "genlab", *args], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE)  # fmt: skip


def students(teacher: str, a: argparse.Namespace, prefix: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (preset, overrides) of each student run."""
    from genlab.pipeline import Pipeline

    g = Pipeline.load(ROOT / teacher).cfg.generator.cfg
    budget = [f"train.steps={a.steps}", f"train.batch_size={a.batch}", f"teacher.run={teacher}"]
    pairs = [f"reflow.n={a.pairs}", f"reflow.steps={a.pair_steps}"]
    slim = [f"slimflow.pairs={prefix}-2rf/pairs", "generator.name=dit", f"generator.depth={max(1, g.depth // 2)}",
            f"generator.hidden_size={max(g.num_heads * 8, g.hidden_size // 2)}", f"generator.num_heads={g.num_heads}",
            f"generator.patch_size={g.patch_size}", f"slimflow.anneal_steps={a.steps // 3}"]  # fmt: skip
    return {
        "2rf": ("quickstart-fewstep", [*budget, *pairs, "train.sample_every=0", "train.checkpoint_every=0"]),
        "slimflow": ("smoke-slimflow", [*budget, *slim]),
        "ctm": ("smoke-ctm", [*budget, "objective.solver_steps=16", "objective.max_solver_steps=8"]),
    }


def train(preset: str, out: str, overrides: list[str]) -> dict:
    t0 = time.time()
    if not (ROOT / out / "generator" / "model.safetensors").is_file():
        done = genlab("train", "--preset", preset, "--out", out, "--resume", "auto", *overrides)
        if done.returncode:
            raise SystemExit(f"training {out} failed (exit {done.returncode})")
    return {"preset": preset, "overrides": overrides, "seconds": round(time.time() - t0, 1),
            "load_average": os.getloadavg()}  # fmt: skip


def fid(run: str, n: int, *options: str) -> float | str | None:
    if n == 0:
        return None  # --tiny: no FID (the reference statistics alone take minutes on a CPU)
    done = genlab("eval", "--run", run, "--n", str(n), "--metrics", "fid", "--json", "--log", os.devnull, *options)
    if done.returncode:
        return f"genlab eval failed (exit {done.returncode})"
    return round(json.loads(done.stdout.strip().splitlines()[-1])["fid"], 2)


def ms_per_image(run: str, options: dict, n: int = 64) -> dict:
    """Wall-clock ms per image of ``n`` images at batch 8 (after one warm-up batch), the threads, the load average."""
    import torch

    from genlab.pipeline import Pipeline

    pipe = Pipeline.load(ROOT / run)
    labels = [i % len(pipe.class_names) for i in range(n)]
    pipe.generate(labels[:8], options=options, batch_size=8)
    t0 = time.perf_counter()
    res = pipe.generate(labels, options=options, batch_size=8)
    return {"ms": round(1000 * (time.perf_counter() - t0) / n, 2), "nfe": res.nfe, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()}  # fmt: skip


def rows(teacher: str, runs: dict[str, str], n: int, nfes: tuple[int, ...], big: int, done_file: str | None) -> dict:
    """Every FID row, the fewest NFE first (the teacher's two samplers, then each student), the teacher at ``big``
    NFE last. With ``done_file`` each row is appended to it when measured and reused on a rerun."""
    path = Path(done_file) if done_file else None
    lines = path.read_text().splitlines() if path is not None and path.is_file() else []
    out: dict = {x["label"]: x["row"] for x in map(json.loads, filter(None, lines))}
    todo = [(f"teacher-{s}-{k}", teacher, {"sampler": s, "steps": k}) for k in nfes for s in ("euler", "unipc")]
    todo += [(f"{name}-{k}", run, {"steps": k, **({"sampler": "rfpp"} if name == "2rf" and k > 1 else {})})
             for k in nfes for name, run in runs.items()]  # fmt: skip
    todo.sort(key=lambda r: r[2]["steps"])  # stable: per NFE, the teacher's rows then the students'
    todo += [(f"teacher-{s}-{big}", teacher, {"sampler": s, "steps": big}) for s in ("euler", "unipc")]
    for label, run, opts in todo:
        if label in out:
            continue
        flags = [x for k, v in opts.items() for x in (f"--{k}", str(v))]
        out[label] = {"fid": fid(run, n, *flags), **ms_per_image(run, opts)}
        print(json.dumps({label: out[label]}), file=sys.stderr, flush=True)
        if path is not None:
            with path.open("a") as f:
                f.write(json.dumps({"label": label, "row": out[label]}) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/quickstart", help="the teacher flow run")
    p.add_argument("--n", type=int, default=1000, help="generated images per FID")
    p.add_argument("--steps", type=int, default=600, help="training steps of each student")
    p.add_argument("--batch", type=int, default=64, help="training batch of each student")
    p.add_argument("--pairs", type=int, default=2000, help="reflow pairs (shared by 2-RF and SlimFlow)")
    p.add_argument("--pair-steps", type=int, default=16, help="teacher Heun steps per pair")
    p.add_argument("--runs", default="runs", help="folder of the student runs (fewstep-2rf, -slimflow, -ctm)")
    p.add_argument("--nfes", default=",".join(map(str, NFES)), help="comma-separated NFEs of the few-step rows")
    p.add_argument("--students", default="2rf,slimflow,ctm", help="comma-separated subset of 2rf, slimflow, ctm")
    p.add_argument("--rows", help="a JSON-lines file of measured rows, appended and reused on a rerun (resume)")
    p.add_argument("--tiny", action="store_true", help="seconds: 2 steps, 8 pairs, no FID (tests the code path)")
    p.add_argument("--out", help="result JSON (default benchmarks/results/fewstep-cpu.json; --tiny: not written)")
    a = p.parse_args(argv)
    try:
        nfes = tuple(int(k) for k in a.nfes.split(","))
    except ValueError:
        p.error(f"--nfes: comma-separated whole numbers, got {a.nfes!r}")
    if not nfes or min(nfes) < 1:
        p.error(f"--nfes: every NFE must be at least 1, got {a.nfes!r}")
    chosen = a.students.split(",")
    if not chosen or set(chosen) - {"2rf", "slimflow", "ctm"}:
        p.error(f"--students: a comma-separated subset of 2rf, slimflow, ctm, got {a.students!r}")
    if a.tiny:
        a.n, a.steps, a.batch, a.pairs, a.pair_steps = 0, 2, 4, 8, 2
    prefix = f"{a.runs}/fewstep-tiny" if a.tiny else f"{a.runs}/fewstep"
    result: dict = {"benchmark": "fewstep", "teacher": a.teacher, "n": a.n, "nfes": list(nfes), "students": chosen,
                    "budgets": {}, "platform": platform.platform(), "cpus": os.cpu_count()}  # fmt: skip
    runs = {}
    for name, (preset, overrides) in students(a.teacher, a, prefix).items():
        if name not in chosen:
            continue
        runs[name] = f"{prefix}-{name}"
        result["budgets"][name] = train(preset, runs[name], overrides)
    from genlab.pipeline import Pipeline

    result["parameters"] = {name: sum(p.numel() for p in Pipeline.load(ROOT / r).weights.parameters())
                            for name, r in {"teacher": a.teacher, **runs}.items()}  # fmt: skip
    result["rows"] = rows(a.teacher, runs, a.n, (1, 2) if a.tiny else nfes, 2 if a.tiny else 32, a.rows)
    out = Path(a.out) if a.out else (None if a.tiny else RESULTS / "fewstep-cpu.json")
    text = json.dumps(result, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
