"""Benchmark ``eval``: ``genlab eval``'s images/s against torch-fidelity's ``calculate_metrics``
(``genlab.evals.bench``) on the same generated 32x32 images (a random-init quickstart model)."""

from __future__ import annotations

import argparse

import torch

from genlab import config
from genlab.config import ConfigError
from genlab.data import to_uint8
from genlab.pipeline import Pipeline
from genlab.registry import register


@register("benchmark", "eval")
class EvalBench:
    help = "genlab eval's img/s vs torch-fidelity's calculate_metrics on the same images"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--n", type=int, default=500, help="generated images in all (default 500)")
        parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    @staticmethod
    def run(args: argparse.Namespace) -> dict:
        from genlab.evals.bench import bench_eval

        if args.n <= 1:
            raise ConfigError(f"--n must be at least 2, got {args.n}")
        cfg = config.load("quickstart")
        torch.manual_seed(0)
        pipe = Pipeline.from_config(cfg, [str(i) for i in range(9)]).eval()
        images = to_uint8(
            pipe.generate([i % 9 for i in range(args.n)], seed=0, options={"steps": 2, "cfg": 1.0}).images
        )  # (N, 3, 32, 32)
        return bench_eval(images, dataset="openmoji", resolution=32, split="val", device=args.device)

    @staticmethod
    def summary(result: dict) -> str:
        return "\n".join(f"call {c['call']}: genlab {c['genlab_img_s']:.1f} img/s, torch-fidelity "
                         f"{c['torch_fidelity_img_s']:.1f} img/s, ratio {c['ratio']:.2f}" for c in result["calls"])  # fmt: skip
