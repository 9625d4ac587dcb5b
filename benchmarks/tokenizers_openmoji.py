"""Discrete tokenizers side by side on OpenMoji 32x32: train each for the same steps, then rFID / PSNR / SSIM /
codebook usage / perplexity on the val split. Writes benchmarks/results/tokenizers_openmoji-<device>.json.

    python benchmarks/tokenizers_openmoji.py                       # all configs, 400 steps each
    python benchmarks/tokenizers_openmoji.py --only vq,rvq4 --steps 100 --no-rfid

Every config is the ``smoke-vq`` preset moved to OpenMoji (f4: 8x8 tokens, 512 codes, L1 only, no GAN) with one
change of quantizer; the exact ``genlab train`` overrides are recorded in the JSON. Runs go to --runs (kept, so
``genlab eval --tokenizer RUN`` can be repeated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

BASE = [
    "data.name=openmoji", "data.resolution=32", "tokenizer.net.ch=32", "tokenizer.net.ch_mult=[1,2,2]",
    "tokenizer.net.z_channels=32", "tokenizer.net.num_res_blocks=1", "tokenizer.net.attn_levels=[]",
    "tokenizer.net.mid_attn=false", "tokenizer.net.norm_groups=8", "tokenizer.embed_dim=8", "tokenizer.loss.disc_weight=0",
    "train.batch_size=32", "train.log_every=50", "sample.per_class=8",
]  # fmt: skip
VQ = ["tokenizer.quantizer.codebook_size=512", "tokenizer.quantizer.l2_norm=false",
      "tokenizer.quantizer.dead_code_threshold=0"]  # fmt: skip
CONFIGS = {
    "vq": VQ,
    "vq-l2-factorised": [*VQ[:1], "tokenizer.quantizer.l2_norm=true", "tokenizer.quantizer.code_dim=4", VQ[2]],
    "vq-l2-factorised-reseed": [
        *VQ[:1],
        "tokenizer.quantizer.l2_norm=true",
        "tokenizer.quantizer.code_dim=4",
        "tokenizer.quantizer.dead_code_threshold=0.05",
    ],  # fmt: skip
    "rvq4": ["tokenizer.name=rqvae", "tokenizer.quantizer.depth=4", "tokenizer.quantizer.vq.codebook_size=512"],
    "msvq": [
        "tokenizer.name=msvq-vae",
        "tokenizer.quantizer.scales=[1,2,4,8]",
        "tokenizer.quantizer.vq.codebook_size=512",
    ],  # fmt: skip
}


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--only", help=f"comma-separated subset of {', '.join(CONFIGS)}")
    p.add_argument("--runs", default="runs/tokenizers_openmoji", help="where the tokenizer runs go")
    p.add_argument("--no-rfid", action="store_true", help="skip rFID (no Inception pass)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CONFIGS)
    genlab = [sys.executable, "-m", "genlab"]
    rows = []
    for name in names:
        out = Path(args.runs) / name
        overrides = [*BASE, f"train.steps={args.steps}", *CONFIGS[name]]
        # a new tokenizer name resets its section, so it comes first; the shared net options follow it
        order = sorted(overrides, key=lambda o: not o.startswith("tokenizer.name="))
        t0 = time.perf_counter()
        run([*genlab, "train", "--preset", "smoke-vq", *order, "--out", str(out)])
        train_s = time.perf_counter() - t0
        logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        speeds = [r["img_per_s"] for r in logs[1:] if "img_per_s" in r] or [logs[-1]["img_per_s"]]
        cmd = [*genlab, "eval", "--tokenizer", str(out), "--json", "--device", args.device]
        metrics = json.loads(run(cmd + (["--no-rfid"] if args.no_rfid else [])).strip().splitlines()[-1])
        row = {"config": name, "overrides": order, "train_seconds": round(train_s, 1),
               "img_per_s": round(sorted(speeds)[len(speeds) // 2], 1), **metrics}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    dest = RESULTS / f"tokenizers_openmoji-{args.device}.json"
    dest.write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2) + "\n")
    print(f"wrote {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
