"""The speed cost of thread-invariant convolutions (issue 27): forward + backward of the quickstart tokenizers'
training loss at batch 64, with ``genlab.nn.conv.Conv2d`` (ATen's im2col + GEMM, oneDNN off: weights equal at any
thread count) against the same modules as plain ``nn.Conv2d`` (oneDNN), side by side in one process, interleaved
repeat by repeat, at 1 and 2 threads; and the forward alone without gradients. Also checks that the two give the
same loss and gradients to float rounding.

Perceptual and GAN terms are off (the tokenizer's own cost; a frozen perceptual network is the same in both arms);
``quickstart-vae`` runs under bf16 autocast as its preset trains.

    python benchmarks/conv_threads.py [--batch 64] [--repeats 5]   # writes results/conv_threads-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch import nn

from genlab import config
from genlab.nn.conv import Conv2d
from genlab.tasks.tokenizer import TokenizerTraining

RESULTS = Path(__file__).parent / "results"
PRESETS = ("quickstart-vq", "quickstart-msvq", "quickstart-vae")
OFF = ["tokenizer.loss.perceptual=none", "tokenizer.loss.disc_weight=0"]


def set_convs(model: nn.Module, cls: type) -> None:
    """Every plain conv as ``cls`` (VAR's phi, a ``Conv2d`` subclass, stays invariant in both arms)."""
    for m in model.modules():
        if type(m) in (nn.Conv2d, Conv2d):
            m.__class__ = cls


def step(model: nn.Module, batch: dict, bf16: bool) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(batch)["loss"]
    loss.backward()
    seconds = time.perf_counter() - t
    return seconds, loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def forward_only(model: nn.Module, batch: dict, bf16: bool) -> float:
    """Seconds of the loss's forward without gradients (what encoding and decoding cost when sampling)."""
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(batch)
    return time.perf_counter() - t


def measure(preset: str, batch_size: int, repeats: int, threads: int) -> dict:
    cfg = config.load(preset, OFF)
    torch.manual_seed(0)
    model = TokenizerTraining(cfg.tokenizer.build(resolution=cfg.data.cfg.resolution))
    r = cfg.data.cfg.resolution
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(batch_size, 3, r, r, generator=g) * 2 - 1,
             "label": torch.zeros(batch_size, dtype=torch.long), "seed": torch.arange(batch_size)}  # fmt: skip
    bf16 = cfg.train.mixed_precision == "bf16"
    torch.set_num_threads(threads)
    times = {"onednn": [], "invariant": [], "fwd_onednn": [], "fwd_invariant": []}
    out = {}
    for i in range(repeats + 1):  # the first round warms up
        for arm, cls in (("onednn", nn.Conv2d), ("invariant", Conv2d)):
            set_convs(model, cls)
            seconds, loss, grads = step(model, batch, bf16)
            forward = forward_only(model, batch, bf16)
            out[arm] = (loss, grads)
            if i:
                times[arm].append(seconds)
                times["fwd_" + arm].append(forward)
    (la, ga), (lb, gb) = out["onednn"], out["invariant"]
    grad_rel = max(((a - b).norm() / a.norm().clamp_min(1e-30)).item() for a, b in zip(ga, gb))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"preset": preset, "threads": threads, "batch": batch_size, "bf16": bf16,
            "ms_onednn": 1e3 * med["onednn"], "ms_invariant": 1e3 * med["invariant"],
            "ratio": med["invariant"] / med["onednn"], "ms_forward_onednn": 1e3 * med["fwd_onednn"],
            "ms_forward_invariant": 1e3 * med["fwd_invariant"], "forward_ratio": med["fwd_invariant"] / med["fwd_onednn"],
            "loss_diff": abs(la - lb).item(),
            "max_grad_rel_diff": grad_rel}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=str(RESULTS / "conv_threads-cpu.json"))
    args = ap.parse_args()
    load_before = os.getloadavg()
    rows = []
    for preset in PRESETS:
        for n in args.threads:
            rows.append(measure(preset, args.batch, args.repeats, n))
            print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
              "note": "median of --repeats interleaved rounds; wall-clock under whatever load loadavg shows"}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
