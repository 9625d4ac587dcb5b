"""1-D tokenizers against the 2-D VQ on OpenMoji 32x32 (issue 20's miniatures): TiTok with 16 and 32 tokens
against the landed 2-D VQ with 8x8 = 64 tokens (rFID, PSNR, codebook usage), and FlexTok's reconstruction per
prefix length k = 1, 2, 4, 8, 16, 32 (the paper's claim: the error falls with k). Writes
benchmarks/results/onedim_openmoji-<device>.json.

    python benchmarks/onedim_openmoji.py                               # every row, 400 steps each
    python benchmarks/onedim_openmoji.py --only flextok-32 --steps 1500 --no-rfid

Every row trains on the same images (OpenMoji 32x32 train split, group labels, no skin tones), batch 32, for the
same ``--steps``, and is evaluated on the same val images (all of them unless ``--n``): the 2-D row is
``tokenizers_openmoji.py``'s ``vq-l2-factorised-reseed`` (f4 VQGAN, 512 codes, re-seeding), the TiTok rows are
``quickstart-titok`` (single stage from scratch: pixel head, no teacher, l2-normalised VQ of 512 codes with
dead-code re-seeding), the FlexTok row is ``quickstart-flextok``. The exact ``genlab train`` arguments, the wall
time and the load average are recorded per row (times are only comparable within one run of this script).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizers_openmoji import BASE, CONFIGS, RESULTS, run  # noqa: E402

OPENMOJI = ["data.name=openmoji", "data.resolution=32", "train.batch_size=32"]
ROWS = {  # name: (preset, overrides, prefix lengths to evaluate or None)
    "vq-2d-64": ("smoke-vq", [*BASE, *CONFIGS["vq-l2-factorised-reseed"]], None),
    "titok-32": ("quickstart-titok", OPENMOJI, None),
    "titok-16": ("quickstart-titok", [*OPENMOJI, "tokenizer.num_tokens=16"], None),
    "flextok-32": ("quickstart-flextok", OPENMOJI, "1,2,4,8,16,32"),
}


def train_and_eval(name: str, args: argparse.Namespace) -> dict:
    preset, overrides, tokens = ROWS[name]
    out = Path(args.runs) / name
    train = [f"train.steps={args.steps}", *overrides, *(args.set or [])]
    genlab = [sys.executable, "-m", "genlab"]
    load0, t0 = os.getloadavg(), time.perf_counter()
    run([*genlab, "train", "--preset", preset, *train, "--out", str(out)])
    train_s = time.perf_counter() - t0
    cmd = [*genlab, "eval", "--tokenizer", str(out), "--json", "--device", args.device]
    cmd += ["--tokens", tokens] if tokens else []
    cmd += ["--n", str(args.n)] if args.n else []
    cmd += ["--no-rfid"] if args.no_rfid else []
    metrics = json.loads(run(cmd).strip().splitlines()[-1])
    return {"row": name, "preset": preset, "overrides": train, "train_seconds": round(train_s, 1),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            **metrics}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400, help="training steps of every row")
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--set", action="append", help="an extra override for every row (KEY=VALUE), repeatable")
    p.add_argument("--runs", default="runs/onedim_openmoji", help="where the tokenizer runs go")
    p.add_argument("--n", type=int, default=0, help="val images to evaluate (0: all)")
    p.add_argument("--no-rfid", action="store_true", help="skip rFID (no Inception pass)")
    p.add_argument("--tag", default="", help="suffix of the result file's name")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(ROWS)
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {', '.join(unknown)}; rows: {', '.join(ROWS)}")
    rows = []
    for name in names:
        rows.append(train_and_eval(name, args))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / f"onedim_openmoji{args.tag}-{args.device}.json"
    budget = {"steps": args.steps, "batch_size": 32, "data": "openmoji 32x32 train (group labels, no skin tones)"}
    dest.write_text(json.dumps({"budget": budget, "rows": rows}, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
