"""Speed of genlab's GPT against transformers' ``LlamaForCausalLM`` at the same width, depth, heads, SwiGLU width,
vocabulary and sequence length (``genlab bench train --family gpt``).

- ``bench_train``: one training step each — forward over B x T inputs, next-token cross-entropy on all T logits,
  backward, grad-norm clipping at 1, AdamW — on the same random tokens, in interleaved rounds (the order flips every
  round, so background load hits both alike); tokens/s is the median over a model's rounds.
- ``bench_sample``: tokens/s of KV-cached decoding of T tokens per image at batch B: genlab's ``GPT.sample``
  (greedy, cfg 1) against ``generate(do_sample=False, use_cache=True)`` with exactly T new tokens; interleaved too.

genlab's model has a class token (the sequence is [class, t_0 .. t_{T-2}]) and a (classes + 1) x width class table;
transformers' gets a token id in its place, so its parameters are fewer by that table. ``transformers`` is imported
only inside the functions (``pip install 'genlab[dev]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.generators.gpt import GPT, ffn_hidden
from genlab.registry import register
from genlab.tokenizers.base import TokenSpec

GRAD_CLIP, LR = 1.0, 1e-4
MIN_ROUNDS = 2


@dataclass(frozen=True)
class GPTBenchSize:
    depth: int
    width: int
    heads: int
    vocab: int
    grid: int  # tokens per image = grid * grid (raster order, 2-D RoPE in genlab, 1-D in Llama)
    classes: int
    batch_cpu: int
    batch_cuda: int


SIZES: dict[str, GPTBenchSize] = {
    "small": GPTBenchSize(4, 256, 4, 1024, 16, 10, batch_cpu=8, batch_cuda=64),
    "GPT-B": GPTBenchSize(12, 768, 12, 16384, 16, 1000, batch_cpu=4, batch_cuda=64),  # LlamaGen GPT-B on VQ-16
    "tiny": GPTBenchSize(1, 64, 2, 64, 4, 10, batch_cpu=4, batch_cuda=4),  # for the test suite
}


def build_pair(s: GPTBenchSize, device: torch.device) -> tuple[GPT, nn.Module]:
    """genlab's GPT and a ``LlamaForCausalLM`` of the same shape (bias-free, untied, RMSNorm eps 1e-5, SDPA)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    spec = TokenSpec("discrete", (s.grid, s.grid), vocab_size=s.vocab)
    ours = GPT(GPT.Config(depth=s.depth, hidden_size=s.width, num_heads=s.heads), spec=spec, num_classes=s.classes)
    hf_cfg = LlamaConfig(
        vocab_size=s.vocab, hidden_size=s.width, intermediate_size=ffn_hidden(s.width, 256),
        num_hidden_layers=s.depth, num_attention_heads=s.heads, num_key_value_heads=s.heads,
        max_position_embeddings=s.grid * s.grid, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, attention_dropout=0.0, bos_token_id=0, eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    hf_cfg._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(hf_cfg)
    for p in ours.parameters():  # a non-zero output head, so greedy decoding does real work on both sides
        nn.init.normal_(p, std=0.02)
    return ours.to(device), theirs.to(device)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _interleave(runs: dict[str, Callable[[], int]], seconds: float, device: torch.device) -> dict[str, dict]:
    """Rounds of each ``run`` (returns the tokens it processed) for about a second each, order flipping every round,
    until each has used seconds / 2; per round, tokens per wall second and per second of this process's CPU time
    (steadier than wall time on a machine shared with other work)."""
    per_model, round_s = seconds / 2, min(1.0, seconds / 12)
    rates = {name: {"wall": [], "cpu": []} for name in runs}
    used = dict.fromkeys(runs, 0.0)
    r = 0
    while r < MIN_ROUNDS or min(used.values()) < per_model:
        for name in list(runs) if r % 2 == 0 else list(reversed(runs)):
            tokens = 0
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            while True:
                tokens += runs[name]()
                _sync(device)
                dt = time.perf_counter() - t0
                if dt >= round_s:
                    break
            used[name] += dt
            rates[name]["wall"].append(tokens / dt)
            rates[name]["cpu"].append(tokens / max(time.process_time() - c0, 1e-9))
        r += 1
    return rates


def _summary(rates: dict[str, dict]) -> dict:
    ours, theirs = rates["genlab"], rates["transformers"]
    g, h = statistics.median(ours["wall"]), statistics.median(theirs["wall"])
    gc, hc = statistics.median(ours["cpu"]), statistics.median(theirs["cpu"])
    return {
        "genlab_tok_s": round(g, 1),
        "transformers_tok_s": round(h, 1),
        "ratio": round(g / h, 3),
        "ratio_paired": round(statistics.median(a / b for a, b in zip(ours["wall"], theirs["wall"])), 3),
        "ratio_cpu_time": round(gc / hc, 3),  # tokens per CPU second of this process, genlab / transformers
        "rounds": len(ours["wall"]),
    }


def _setup(seconds: float, threads: int | None, device: str | None, sizes: tuple[str, ...]) -> torch.device:
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ValueError(f"unknown benchmark size(s) {unknown}; choose from {list(SIZES)}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _header(dev: torch.device, what: str) -> dict:
    import transformers

    return {
        "device": dev.type,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "what": what,
        "load_avg_1min": _load_avg(),
        "sizes": {},
    }


def _with_threads(threads: int | None, fn: Callable[[], dict]) -> dict:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        out = fn()
    finally:
        torch.set_num_threads(before)
    out["load_avg_1min"] = [out["load_avg_1min"], _load_avg()]  # before, after
    return out


# ----------------------------------------------------------------------------- training


def bench_train(
    seconds: float = 10.0, threads: int | None = None, *, sizes: tuple[str, ...] = ("small",), device=None
) -> dict:
    """Training tokens/s of genlab's GPT and transformers' Llama at each size, fp32; ``seconds`` per size, shared."""
    dev = _setup(seconds, threads, device, sizes)

    def run() -> dict:
        out = _header(dev, "forward, next-token cross-entropy, backward, clip_grad_norm 1, AdamW (fp32)")
        for name in sizes:
            out["sizes"][name] = _bench_train_size(SIZES[name], dev, seconds)
        return out

    return _with_threads(threads, run)


def _bench_train_size(s: GPTBenchSize, dev: torch.device, seconds: float) -> dict:
    ours, theirs = build_pair(s, dev)
    B, T = (s.batch_cuda if dev.type == "cuda" else s.batch_cpu), s.grid * s.grid
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, s.vocab, (B, s.grid, s.grid), generator=g).to(dev)
    labels, seeds = torch.randint(0, s.classes, (B,), generator=g).to(dev), torch.arange(B)
    hf_inputs = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=dev), tokens.flatten(1)[:, :-1]], dim=1)
    targets = tokens.flatten(1)

    def stepper(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], int]:
        params = [p for p in model.train().parameters()]
        opt = torch.optim.AdamW(params, lr=LR)

        def step() -> int:
            loss_fn().backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return B * T

        return step

    def hf_loss() -> torch.Tensor:
        logits = theirs(input_ids=hf_inputs, use_cache=False).logits  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    runs = {
        "genlab": stepper(ours, lambda: ours.loss(tokens, labels, seeds)["loss"]),
        "transformers": stepper(theirs, hf_loss),
    }
    for run in runs.values():  # warm-up (allocator, oneDNN kernels)
        run(), run()
    return {
        **_summary(_interleave(runs, seconds, dev)),
        "batch": B,
        "tokens_per_image": T,
        "genlab_params": _params(ours),
        "transformers_params": _params(theirs),
        "config": asdict(s),
    }


# ----------------------------------------------------------------------------- sampling


def bench_sample(
    seconds: float = 10.0,
    threads: int | None = None,
    *,
    sizes: tuple[str, ...] = ("small",),
    batch: int | None = None,
    device=None,
) -> dict:
    """Greedy KV-cached decoding tokens/s: genlab's ``GPT.sample`` against ``generate(use_cache=True)``."""
    dev = _setup(seconds, threads, device, sizes)

    def run() -> dict:
        out = _header(dev, "greedy decoding of all tokens per image with a KV cache, cfg 1, fp32")
        for name in sizes:
            out["sizes"][name] = _bench_sample_size(SIZES[name], dev, seconds, batch)
        return out

    return _with_threads(threads, run)


def _bench_sample_size(s: GPTBenchSize, dev: torch.device, seconds: float, batch: int | None) -> dict:
    ours, theirs = build_pair(s, dev)
    ours.eval(), theirs.eval()
    B, T = batch or (s.batch_cuda if dev.type == "cuda" else s.batch_cpu), s.grid * s.grid
    labels, seeds = torch.arange(B, device=dev) % s.classes, torch.arange(B)
    start = torch.zeros(B, 1, dtype=torch.long, device=dev)
    options = GPT.SampleOptions(temperature=0.0, cfg=1.0)

    def genlab_run() -> int:
        ours.sample(labels, seeds, options)
        return B * T

    @torch.no_grad()
    def hf_run() -> int:
        out = theirs.generate(
            input_ids=start, attention_mask=torch.ones_like(start), max_new_tokens=T, min_new_tokens=T,
            do_sample=False, use_cache=True, pad_token_id=0,
        )  # fmt: skip
        assert out.shape == (B, 1 + T)
        return B * T

    runs = {"genlab": genlab_run, "transformers": hf_run}
    for run in runs.values():
        run()
    return {
        **_summary(_interleave(runs, seconds, dev)),
        "batch": B,
        "tokens_per_image": T,
        "genlab_params": _params(ours),
        "transformers_params": _params(theirs),
        "config": asdict(s),
    }


@register("benchmark", "gpt")
class GPTBench:
    help = "genlab's GPT vs transformers' Llama: training tokens/s and KV-cached sampling (also `bench train --family gpt`)"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_timing_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> dict:
        return {"train": bench_train(args.seconds, args.threads, device=args.device),
                "sample": bench_sample(args.seconds, args.threads, device=args.device)}  # fmt: skip

    @staticmethod
    def summary(result: dict) -> str:
        """One line per size and part: genlab's GPT against transformers' Llama."""
        lines = []
        for part, r in result.items():
            for size, row in r.get("sizes", {}).items():
                nums = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if isinstance(v, (int, float)))
                lines.append(f"{part} {size}: {nums}")
        return "\n".join(lines)


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """--seconds, --threads, --device: the flags of the timing benchmarks."""
    parser.add_argument("--seconds", type=float, default=15.0, help="timing budget per size, shared by the two models")
    parser.add_argument("--threads", type=int, help="CPU threads (1 gives steadier numbers on a busy machine)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
