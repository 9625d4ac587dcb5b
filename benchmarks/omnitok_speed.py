"""OmniTokenizer encode and decode speed on this machine: clips per second at the smoke size (16 px, 5 frames) and at
the paper size (width 512, 8192 x 8 codes) on 128 px 17-frame clips, float32, random weights (speed does not depend
on them). Writes benchmarks/results/omnitok_speed-{cpu,cuda}.json with the load average beside the numbers (a shared
machine's wall clock is under load: compare rows of one run, not runs).

    python benchmarks/omnitok_speed.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import torch

from genlab.tokenizers.omnitok import OmniTokenizer

SMOKE = dict(patch=4, temporal_patch=2, width=64, num_heads=4, encoder_blocks="tw", decoder_blocks="tw",
             temporal_depth=1, window=2, code_dim=8, quantizer={"codebook_size": 256})  # fmt: skip
CASES = {
    "smoke (16 px, 5 frames, batch 16)": (SMOKE, 16, 5, 16),
    "paper size (128 px, 17 frames, batch 1)": ({}, 128, 17, 1),
}


def rate(fn, n: int, seconds: float) -> float:
    """Items per second of ``fn`` (n items a call) after one warm-up call, over at least ``seconds``."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        fn()
        calls += 1
    return calls * n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name, (kw, res, frames, batch) in CASES.items():
        torch.manual_seed(0)
        tok = OmniTokenizer(OmniTokenizer.Config(frames=frames, **kw), resolution=res).to(device).eval()
        x = torch.rand(batch, 3, frames, res, res, device=device) * 2 - 1
        ids = tok.encode(x)
        rows.append({"case": name, "params": sum(p.numel() for p in tok.parameters()), "tokens": list(ids.shape[1:]),
                     "encode_clips_per_s": rate(partial(tok.encode, x), batch, args.seconds),
                     "decode_clips_per_s": rate(partial(tok.decode, ids), batch, args.seconds)})  # fmt: skip
        print(json.dumps(rows[-1]))
    out = {"device": device.type, "threads": torch.get_num_threads(), "loadavg": os.getloadavg(), "rows": rows,
           "note": "float32, no_grad; wall clock on a shared machine (under load)"}  # fmt: skip
    path = Path(__file__).parent / "results" / f"omnitok_speed-{device.type}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
