"""Training-speed benchmark: genlab's DiT against diffusers' ``DiTTransformer2DModel``.

Both models get the same work per step, the one genlab's trainer does: forward, the flow-matching
loss (x_t = (1 - t) x0 + t eps, target eps - x0, MSE), backward, grad-norm clipping, an AdamW step
and an EMA update with diffusers' ``EMAModel(..., foreach=True)``. Both run in one process on the
same random in-memory data, in interleaved rounds (genlab steps for about a second, then diffusers,
the order flipping every round) so that background load hits both alike; a model's throughput is
the median over its rounds.

``bench_train()`` returns a JSON-able dict; ``genlab bench train --json`` and
``benchmarks/train_speed.py`` print it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from genlab import registry
from genlab.bench.gpt import add_timing_arguments

GRAD_CLIP = 1.0  # genlab's TrainConfig defaults
LR = 1e-4
EMA_DECAY = 0.9999
WARMUP_STEPS = 2
MIN_ROUNDS = 2
PARAM_TOLERANCE = 0.01  # the two models' parameter counts must agree to 1%


@dataclass(frozen=True)
class BenchSize:
    channels: int
    image: int  # height = width, pixels or latents
    depth: int
    width: int
    heads: int
    patch: int
    classes: int
    batch_cpu: int
    batch_cuda: int


SIZES: dict[str, BenchSize] = {
    # pixel-space model, CIFAR-like
    "small": BenchSize(3, 32, 6, 256, 4, 4, 10, batch_cpu=64, batch_cuda=256),
    # DiT-S/2 on 256x256 images through the SD VAE (32x32x4 latents), ImageNet classes
    "DiT-S/2": BenchSize(4, 32, 12, 384, 6, 2, 1000, batch_cpu=16, batch_cuda=256),
    # for the test suite only: a step takes milliseconds
    "tiny": BenchSize(3, 16, 1, 64, 2, 4, 10, batch_cpu=8, batch_cuda=8),
}


# ----------------------------------------------------------------------------- models


def build_genlab(s: BenchSize) -> nn.Module:
    from genlab.generators.dit import DiT, latent_spec

    cfg = DiT.Config(depth=s.depth, hidden_size=s.width, num_heads=s.heads, patch_size=s.patch)
    return DiT(cfg, spec=latent_spec(s.channels, s.image), num_classes=s.classes)


def build_diffusers(s: BenchSize) -> tuple[nn.Module, int]:
    """diffusers' DiT with genlab's shape; returns (model, its parameter count before tying).

    diffusers gives every block its own ``CombinedTimestepLabelEmbeddings`` (timestep MLP + label
    table) inside ``norm1.emb``, where the DiT paper has one shared embedder; diffusers' conversion
    of the official checkpoints copies the same weights into every block. Untied, that adds
    (depth - 1) embedders: +9% parameters at "small", +21% at DiT-S/2 (1001 x 384 label table per
    block), all of it optimizer and EMA work genlab's model doesn't have. We tie the blocks'
    embedders to block 0's, which is the paper's model and makes the counts equal exactly; diffusers
    still recomputes the (now shared) embedding in every block, which is its own forward's cost.

    diffusers' ``LabelEmbedding`` also drops labels at random in training mode, independently in
    every block; we switch that off and drop labels once, in the shared loss, for both models.
    """
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(
        num_attention_heads=s.heads,
        attention_head_dim=s.width // s.heads,
        in_channels=s.channels,
        out_channels=s.channels,  # no learned-sigma doubling, like genlab's
        num_layers=s.depth,
        sample_size=s.image,
        patch_size=s.patch,
        num_embeds_ada_norm=s.classes,
    )
    untied = count_params(model)
    shared = model.transformer_blocks[0].norm1.emb
    for block in model.transformer_blocks[1:]:
        block.norm1.emb = shared
    shared.class_embedder.dropout_prob = 0.0  # the null row (index ``classes``) stays in the table
    return model, untied


def diffusers_forward(model: nn.Module) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """genlab's backbone signature ``f(x, t in [0, 1], y)`` for diffusers' DiT."""

    def forward(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        # diffusers embeds timesteps like DiT, on the 0..1000 scale; genlab scales t in [0, 1] itself
        return model(x, timestep=t * 1000, class_labels=y, return_dict=False)[0]

    return forward


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared parameters count once


# ----------------------------------------------------------------------------- one training step


class Stepper:
    """One model's training step: forward + flow loss + backward + clip + AdamW + EMA."""

    def __init__(self, forward: Callable[[Tensor, Tensor, Tensor], Tensor], model: nn.Module, classes: int):
        from diffusers.training_utils import EMAModel

        self.forward, self.model, self.classes = forward, model.train(), classes
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=LR)
        self.ema = EMAModel(self.params, decay=EMA_DECAY, foreach=True)

    def step(self, batch: dict[str, Tensor], autocast) -> None:
        x0, y, eps, t, drop = batch["x0"], batch["y"], batch["eps"], batch["t"], batch["drop"]
        y = torch.where(drop, torch.full_like(y, self.classes), y)  # class dropout for guidance
        tb = t.view(-1, 1, 1, 1)
        x_t = (1 - tb) * x0 + tb * eps
        with autocast():
            pred = self.forward(x_t, t, y)
        loss = F.mse_loss(pred.float(), eps - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.params)


def make_batches(s: BenchSize, batch: int, device: torch.device, n: int = 4) -> list[dict[str, Tensor]]:
    """``n`` random batches, in memory on the device, cycled through by both models."""
    torch.manual_seed(0)
    out = []
    for _ in range(n):
        x0 = torch.randn(batch, s.channels, s.image, s.image)
        out.append(
            {
                "x0": x0,
                "y": torch.randint(0, s.classes, (batch,)),
                "eps": torch.randn_like(x0),
                "t": torch.sigmoid(torch.randn(batch)),  # logit-normal, genlab's default
                "drop": torch.rand(batch) < 0.1,
            }
        )
    return [{k: v.to(device) for k, v in b.items()} for b in out]


# ----------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast_factory(device: torch.device, precision: str):
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _time_steps(stepper: Stepper, batches, k: int, autocast, device: torch.device, start: int = 0) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for i in range(k):
        stepper.step(batches[(start + i) % len(batches)], autocast)
    _sync(device)
    return time.perf_counter() - t0


def _run_for(stepper: Stepper, batches, seconds: float, autocast, device: torch.device, start: int):
    """Steps until ``seconds`` have passed (at least one); returns (steps, elapsed seconds)."""
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    while True:
        stepper.step(batches[(start + n) % len(batches)], autocast)
        n += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n, elapsed


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bf16 matmuls (AVX512-BF16 / AMX), as oneDNN sees it."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _probe_precision(steppers: dict[str, Stepper], batches, device: torch.device) -> tuple[str, dict]:
    """On the CPU: bf16 autocast if it is faster than fp32 for both models, else fp32.

    Per precision and model ``WARMUP_STEPS`` steps, the first of which creates oneDNN's kernels; the
    last one is timed. They are the warm-up for whichever precision wins.
    """
    if not cpu_bf16_supported():
        return "fp32", {"bf16": "not supported by this CPU"}
    per_step: dict[str, dict[str, float]] = {}
    for precision in ("fp32", "bf16"):
        autocast = _autocast_factory(device, precision)
        per_step[precision] = {}
        for name, st in steppers.items():
            for i in range(WARMUP_STEPS):
                per_step[precision][name] = _time_steps(st, batches, 1, autocast, device, i)  # keeps the last
    bf16_wins = all(per_step["bf16"][m] < per_step["fp32"][m] for m in steppers)
    probe = {p: {m: round(v, 4) for m, v in d.items()} for p, d in per_step.items()}  # seconds per step
    choice = "bf16" if bf16_wins else "fp32"
    return choice, probe


def _bench_size(
    s: BenchSize, device: torch.device, seconds: float, precision: str, progress: bool, label: str
) -> tuple[dict, str, dict | None]:
    batch = s.batch_cuda if device.type == "cuda" else s.batch_cpu
    torch.manual_seed(0)
    genlab_model = build_genlab(s).to(device)
    diffusers_model, diffusers_untied = build_diffusers(s)
    diffusers_model = diffusers_model.to(device)
    gp, dp = count_params(genlab_model), count_params(diffusers_model)
    if abs(gp - dp) > PARAM_TOLERANCE * gp:
        raise RuntimeError(f"{label}: genlab has {gp} parameters, diffusers {dp}; the models are not comparable")

    steppers = {
        "genlab": Stepper(genlab_model, genlab_model, s.classes),
        "diffusers": Stepper(diffusers_forward(diffusers_model), diffusers_model, s.classes),
    }
    batches = make_batches(s, batch, device)

    probe, warm = None, {}
    if precision == "auto" and device.type == "cpu":
        precision, probe = _probe_precision(steppers, batches, device)
        warm = {name: probe[precision][name] for name in steppers} if precision in probe else {}
    elif precision == "auto":
        precision = "bf16"
    autocast = _autocast_factory(device, precision)
    if not warm:
        for name, st in steppers.items():
            for i in range(WARMUP_STEPS):
                warm[name] = _time_steps(st, batches, 1, autocast, device, i)  # the last one estimates a step

    # a round: each model steps until it has run round_s (at least one step); ~1 s, less on small budgets
    per_model = seconds / 2
    round_s = min(1.0, per_model / 6)
    est_rounds = max(MIN_ROUNDS, round(per_model / max(round_s, *warm.values())))
    rates: dict[str, list[float]] = {name: [] for name in steppers}
    used, steps = dict.fromkeys(steppers, 0.0), dict.fromkeys(steppers, 0)
    bar_kwargs = {} if progress else {"disable": True}  # else tqdm's defaults (TQDM_DISABLE=1 silences it)
    bar = tqdm(total=est_rounds, desc=f"bench {label} ({precision})", unit="round", leave=False, **bar_kwargs)
    r = 0
    while r < MIN_ROUNDS or min(used.values()) < per_model:
        order = list(steppers) if r % 2 == 0 else list(reversed(steppers))  # neither model always goes first
        for name in order:
            n, dt = _run_for(steppers[name], batches, round_s, autocast, device, steps[name])
            used[name] += dt
            steps[name] += n
            rates[name].append(n * batch / dt)
        r += 1
        left = per_model - min(used.values())  # re-estimate the rounds still to go from those so far
        bar.total = max(r + (math.ceil(left / (min(used.values()) / r)) if left > 0 else 0), MIN_ROUNDS)
        bar.update(1)
        bar.set_postfix(genlab=f"{rates['genlab'][-1]:.1f}", diffusers=f"{rates['diffusers'][-1]:.1f}")
    bar.close()

    g, d = statistics.median(rates["genlab"]), statistics.median(rates["diffusers"])
    paired = statistics.median(a / b for a, b in zip(rates["genlab"], rates["diffusers"]))
    result = {
        "genlab_img_s": round(g, 2),
        "diffusers_img_s": round(d, 2),
        "ratio": round(g / d, 3),
        "ratio_paired": round(paired, 3),  # median over rounds of the per-round ratio
        "batch": batch,
        "genlab_params": gp,
        "diffusers_params": dp,
        "diffusers_params_untied": diffusers_untied,
        "rounds": r,
        "steps": steps,
        "config": {
            "channels": s.channels,
            "image_size": s.image,
            "depth": s.depth,
            "width": s.width,
            "heads": s.heads,
            "patch": s.patch,
            "classes": s.classes,
        },
    }
    del steppers, genlab_model, diffusers_model, batches
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result, precision, probe


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_train(
    seconds: float = 15.0,
    device: str | None = None,
    sizes: tuple[str, ...] = ("small", "DiT-S/2"),
    *,
    precision: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> dict:
    """Training img/s of genlab's DiT and diffusers' DiT at each of ``sizes``.

    ``seconds`` is the timing budget per size, shared by the two models (each gets about half),
    not counting model construction and warm-up. ``precision``: "auto" (bf16 autocast on CUDA; on
    the CPU bf16 autocast if a quick probe on the first size finds it faster for both models, else
    fp32), "fp32" or "bf16". One precision is used for every size. ``threads``: CPU threads for the
    run (default: torch's, normally one per core); 1 gives steadier numbers on a machine that is busy
    with other work, where 2+ OpenMP threads per process fight for the cores.
    """
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ValueError(f"unknown benchmark size(s) {unknown}; choose from {list(SIZES)}")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench_all(seconds, dev, sizes, precision, progress)
    finally:
        torch.set_num_threads(before)


def _bench_all(seconds: float, dev: torch.device, sizes: tuple[str, ...], precision: str, progress: bool) -> dict:
    import diffusers

    out: dict = {
        "device": dev.type,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "precision": None,
        "attention": "genlab: fused qkv, SDPA (explicit softmax(qk)v for bf16/fp16 on the CPU); diffusers: AttnProcessor2_0",
        "step": f"forward, flow-matching MSE, backward, clip_grad_norm {GRAD_CLIP}, AdamW, EMAModel(foreach=True)",
        "seconds_per_size": seconds,
        "load_avg_1min": _load_avg(),  # other work on the machine (before, after), where the OS reports it
        "sizes": {},
    }
    for name in sizes:
        result, used, probe = _bench_size(SIZES[name], dev, seconds, precision, progress, name)
        if precision == "auto":
            precision = used  # decided once, on the first size, for the whole run
        out["precision"] = used
        if probe is not None:
            out["precision_probe_s_per_step"] = {"size": name, **probe}
        out["sizes"][name] = result
    out["load_avg_1min"] = [out["load_avg_1min"], _load_avg()]
    return out


@registry.register("benchmark", "train")
class TrainBench:
    help = "training img/s of genlab's DiT vs diffusers' DiT (--family gpt: the gpt benchmark)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_timing_arguments(parser)
        parser.add_argument("--family", choices=["dit", "gpt"], default="dit",
                            help="dit (genlab's DiT vs diffusers' DiT) or gpt (genlab's GPT vs transformers' Llama, "
                                 "training and KV-cached sampling)")  # fmt: skip

    @staticmethod
    def run(args: argparse.Namespace) -> dict:
        if args.family == "gpt":
            return registry.get("benchmark", "gpt").run(args)
        return bench_train(seconds=args.seconds, device=args.device, threads=args.threads)

    @staticmethod
    def summary(result: dict) -> str:
        if "train" in result and "sample" in result:  # --family gpt
            return registry.get("benchmark", "gpt").summary(result)
        return "\n".join(f"{size}: genlab {r['genlab_img_s']:.1f} img/s, diffusers {r['diffusers_img_s']:.1f} img/s, "
                         f"ratio {r['ratio']:.2f}" for size, r in result["sizes"].items())  # fmt: skip
