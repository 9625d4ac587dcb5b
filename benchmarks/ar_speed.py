"""Sampling speed of next-scale prediction against next-token prediction (issue 14; VAR's "~20x faster than raster
AR" claim in miniature): VAR (one forward per scale, KV cache) vs a raster GPT (one forward per token, KV cache) vs
the same GPT without a cache (the whole prefix recomputed for every token), at batch 16 with guidance.

Models are the quickstart sizes with random weights (speed does not depend on the weights): VAR as
``quickstart-var`` on ``quickstart-msvq``'s tokens (scales 1,2,3,4,6,8: 130 positions), the GPT at the same depth
and width on ``quickstart-vq``'s raster 8x8 grid (64 tokens), both on 32x32 images of 9 classes.

    python benchmarks/ar_speed.py [--batch 16] [--repeats 3] [--threads 2]   # writes results/ar_speed-cpu.json
    python benchmarks/ar_speed.py --runs runs/miniature-var runs/miniature-gpt --out results/ar_speed_runs-cpu.json

``--runs`` times two trained runs instead (benchmarks/var_vs_gpt.py's, 7.40M and 7.49M parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from genlab import config
from genlab.generators.base import build_generator
from genlab.generators.gpt import decode
from genlab.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"


class NoCache:
    """A GPT seen through ``forward_step`` that ignores the cache: every step recomputes the whole prefix."""

    def __init__(self, model):
        self.model, self.seq = model, None

    def forward_step(self, x, cache, pos):
        self.seq = x if pos == 0 else torch.cat([self.seq, x], dim=1)
        return self.model(self.seq)[:, -x.shape[1] :]


def build(preset: str, tokenizer_preset: str, generator: dict | None = None):
    tok_cfg = config.load(tokenizer_preset)
    torch.manual_seed(0)
    tok = tok_cfg.tokenizer.build(resolution=tok_cfg.data.cfg.resolution).eval()
    cfg = config.load(preset)
    gen_comp = cfg.generator if generator is None else config.component_from_dict("generator", generator, "generator")
    model = build_generator(gen_comp, None, spec=tok.token_spec, num_classes=9, codes=tok.codes()).eval()
    return tok, model, cfg.sample.options


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--runs", nargs=2, metavar=("VAR_RUN", "GPT_RUN"),
                   help="trained runs to time instead (e.g. runs/miniature-var runs/miniature-gpt)")  # fmt: skip
    p.add_argument("--out", default=str(RESULTS / "ar_speed-cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.runs:
        var, gpt = (Pipeline.load(run).generator.eval() for run in args.runs)
    else:
        var_tok, var, var_opts = build("quickstart-var", "quickstart-msvq")
        width, depth = var.cfg.dims[0], var.cfg.depth
        gpt_tok, gpt, _ = build("quickstart-var", "quickstart-vq", {"name": "gpt", "depth": depth, "hidden_size": width,
                                                                    "num_heads": var.cfg.dims[1]})  # fmt: skip
    gpt_opts = gpt.SampleOptions(cfg=args.cfg, temperature=1.0)
    var_opts = var.SampleOptions(cfg=args.cfg, top_k=0, top_p=1.0, temperature=1.0)
    labels, seeds = torch.arange(args.batch) % 9, torch.arange(args.batch)
    n = gpt.spec.num_positions
    rows = {}
    with torch.inference_mode():
        rows["var"] = timed(lambda: var.sample(labels, seeds, var_opts), args.repeats)
        rows["gpt_kv_cache"] = timed(lambda: gpt.sample(labels, seeds, gpt_opts), args.repeats)
        rows["gpt_no_cache"] = timed(
            lambda: decode(NoCache(gpt), labels, seeds, n, gpt_opts, null_class=gpt.num_classes), args.repeats
        )
    count = lambda m: sum(q.numel() for q in m.parameters())  # noqa: E731
    result = {
        "runs": args.runs, "batch": args.batch, "cfg": args.cfg, "threads": args.threads, "load_average": os.getloadavg(),
        "device": f"cpu ({platform.machine()})",
        "var": {"params": count(var), "positions": var.spec.num_positions, "forwards": len(var.scales),
                "img_per_s": args.batch / rows["var"]},
        "gpt": {"params": count(gpt), "positions": n, "forwards": n,
                "img_per_s_kv_cache": args.batch / rows["gpt_kv_cache"],
                "img_per_s_no_cache": args.batch / rows["gpt_no_cache"]},
        "ratio_var_vs_gpt_kv": rows["gpt_kv_cache"] / rows["var"],
        "ratio_var_vs_gpt_no_cache": rows["gpt_no_cache"] / rows["var"],
        "ratio_kv_cache_vs_no_cache": rows["gpt_no_cache"] / rows["gpt_kv_cache"],
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
