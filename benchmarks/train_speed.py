"""Training speed of genlab's DiT against diffusers' DiT; writes benchmarks/results/train_speed-<device>.json.

    python benchmarks/train_speed.py                  # both sizes, 15 s each, cuda when available
    python benchmarks/train_speed.py --device cpu --threads 1 --seconds 30

The measurement itself is ``genlab.bench.train.bench_train`` (the same as ``genlab bench train --json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genlab.bench.train import SIZES, bench_train

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="timing budget per size, shared by the two models")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--sizes", default="small,DiT-S/2", help=f"comma-separated, from {', '.join(SIZES)}")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's; 1 is steadier on a busy machine)")
    args = p.parse_args(argv)

    sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
    result = bench_train(
        seconds=args.seconds, device=args.device, sizes=sizes, precision=args.precision, threads=args.threads
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"train_speed-{result['device']}.json"
    text = json.dumps(result, indent=2)
    out.write_text(text + "\n")
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
