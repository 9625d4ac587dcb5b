"""Sampling benchmark: speed and quality of every sampler at NFE in {4, 8, 16, 32, 64} on one trained run.

A flow run sweeps its continuous samplers; any other generator sweeps its own ``steps`` option at each NFE
(MaskGIT: one forward per step) or, without a ``steps`` option (GPT, VAR: one forward per token or scale), is
timed once at its defaults. The proxy and the diffusers peer below exist for flow runs only.

For each (sampler, NFE) it generates the same N images (image i: seed i, class i mod K) at batch 8 and reports
ms per image, NFE (base-model evaluations; FlowTurbo's refiner evaluations separately), GFLOPs per image (counted
over a 2-image run at the row's options, ``genlab.bench.cost``) and quality:

- FID, when ``metric`` is given or ``genlab.evals`` provides ``fid_metric_for_run(run_dir, *, n, device)``
  returning ``metric(images)``: uint8 (N, 3, H, W) -> float (the offline Inception, reference stats cached);
- always, a proxy that needs no feature network: the RMS pixel distance (images in [-1, 1]) to a reference
  solution of the same noise, Heun at 127 NFE. It measures integration error, not realism: 0 is "as good as a
  fine ODE solve", and a sampler can't be better than its model.

It also times the same model's sampling through diffusers' ``FlowMatchEulerDiscreteScheduler`` loop as a peer
baseline, and images/s at growing batch sizes (up to the largest that fits, or ``max_batch``).
``bench_sample()`` returns a JSON-able dict; ``genlab bench sample --run DIR --json`` prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genlab.bench.cost import count_sampling
from genlab.config import ConfigError
from genlab.data import to_uint8
from genlab.data.cache import training_images
from genlab.pipeline import Pipeline
from genlab.registry import register
from genlab.safeio import require_finite
from genlab.samplers import Blocks, get
from genlab.tasks.refiner import attach_refiner

DEFAULT_SAMPLERS = ("euler", "heun", "dpm++", "unipc", "flowturbo")
DEFAULT_NFES = (4, 8, 16, 32, 64)
REFERENCE = ("heun", 64)  # 127 NFE (its last step is an Euler step)
Metric = Callable[[Tensor], float]  # uint8 images (N, 3, H, W) -> FID


def plan(sampler: str, nfe: int, *, refiner: bool) -> dict | None:
    """``steps`` and sampler options that spend ``nfe`` base evaluations, or None if the sampler can't (for a
    generator without samplers, ``sampler`` is its name and the plan is its steps)."""
    if sampler == "heun":
        return {"steps": nfe // 2} if nfe % 2 == 0 else None
    if sampler == "flowturbo":
        if nfe < 2:  # a predictor and a corrector at least
            return None
        b = Blocks.for_nfe(nfe, refiner=refiner)
        return {"steps": b.steps, "blocks": str(b)}
    return {"steps": nfe}


def fid_metric(pipe: Pipeline, run_dir: Path, n: int, device) -> tuple[Metric | None, str]:
    """FID from ``genlab.evals`` when it is there (against the run's training set, reference statistics cached by
    genlab.evals); else (None, why). ``genlab.evals.fid_metric_for_run(run_dir, n=, device=)``, if it exists,
    takes precedence over the adapter below."""
    try:
        import genlab.evals as evals
        from genlab.evals.sources import ImageSource
    except ImportError as e:
        return None, f"FID unavailable: genlab.evals is not importable ({e}); quality is the proxy only"
    factory = getattr(evals, "fid_metric_for_run", None)
    if factory is not None:
        return factory(run_dir, n=n, device=device), "FID from genlab.evals.fid_metric_for_run"
    data = pipe.cfg.data
    try:
        net = evals.resolve(device=device)
        name, options, split = training_images(data)
        ref = evals.dataset_reference(name, data.cfg.resolution, net, split=split, options=options, progress=False)[0]
    except Exception as e:  # a missing feature network or dataset: say so, keep the speed numbers
        return None, f"FID unavailable: {e}"

    class Images(ImageSource):
        def __init__(self, images: Tensor):
            self.images, self.n, self.resolution, self.description = images, len(images), images.shape[-1], "bench"

        def batch(self, start: int, stop: int) -> Tensor:
            return self.images[start:stop]

    def metric(images: Tensor) -> float:
        return float(evals.evaluate(Images(images), ref, net, ["fid"], progress=False).metrics["fid"])

    note = f"FID of N={n} samples (biased upward at small N) against {name} {split} ({ref.n} images), {net.name}"
    return metric, note


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(pipe: Pipeline, labels: list[int], *, batch: int, **given):
    """``pipe.generate`` with the run's options changed by ``given``, timed; a flow run's ``sampler`` name, and a
    self-contained generator's ``sampler`` (its own name) is dropped."""
    dev = next(pipe.weights.parameters()).device
    fields = pipe.options_class.fields()
    given = {k: v for k, v in given.items() if k in fields}
    _sync(dev)
    t0 = time.perf_counter()
    out = pipe.generate(labels, seed=0, options=given, batch_size=batch)
    _sync(dev)
    return out, time.perf_counter() - t0


def plan_for(pipe: Pipeline, sampler: str, nfe: int, *, refiner: bool, flow: bool) -> dict | None:
    """The options of one bench row, or None when the run cannot spend ``nfe`` that way."""
    if flow:
        return plan(sampler, nfe, refiner=refiner)
    if "steps" not in pipe.options_class.fields():  # one forward per token or scale: timed once, at its defaults
        return {} if nfe == DEFAULT_NFES[0] else None
    try:
        pipe.sample_options({"steps": nfe})
    except ValueError:  # more steps than the generator can take (MaskGIT: at most one per token)
        return None
    return {"steps": nfe}


def _rmse(a: Tensor, b: Tensor) -> float:
    return (a.double() - b.double()).pow(2).mean().sqrt().item()


def throughput(pipe: Pipeline, *, cfg: float, steps: int = 16, start: int = 8, max_batch: int = 64) -> dict:
    """Images/s of Euler at ``steps`` for batch sizes start, 2 start, ... until out of memory or ``max_batch``."""
    rows, batch = [], start
    while batch <= max_batch:
        labels = [i % len(pipe.class_names) for i in range(batch)]
        try:
            _generate(pipe, labels, sampler="euler", steps=1, batch=batch, cfg=cfg)  # warm-up
            _, sec = _generate(pipe, labels, sampler="euler", steps=steps, batch=batch, cfg=cfg)
            # (a generator without these options runs at its defaults)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        rows.append({"batch": batch, "img_per_s": batch / sec})
        batch *= 2
    best = max(rows, key=lambda r: r["img_per_s"]) if rows else None
    return {
        "sampler": "euler" if "sampler" in pipe.options_class.fields() else pipe.cfg.generator.name,
        "nfe": steps,
        "rows": rows,
        "largest_batch": rows[-1]["batch"] if rows else 0,
        "best": best,
    }


def bench_sample(
    run: Path | str,
    *,
    n: int = 256,
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS,
    nfes: tuple[int, ...] = DEFAULT_NFES,
    batch_size: int = 8,
    cfg: float | None = None,
    refiner: Path | str | None = None,
    metric: Metric | None = None,
    use_evals: bool = True,
    max_batch: int | None = None,
    device=None,
    progress: bool = False,
    gamma: float | None = None,
) -> dict:
    """The table as a JSON-able dict (see the module docstring). ``gamma``: the re-noising γ of every row, for a run
    whose sampling takes one (CTM's γ-sampling; None: the run's default); ConfigError for any other run."""
    if gamma is not None:
        check_gamma(gamma)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = Pipeline.load(run, device=device)
    if refiner:
        attach_refiner(pipe, refiner)
    if gamma is not None and "gamma" not in pipe.options_class.fields():
        have = ", ".join(pipe.options_class.fields())
        raise ConfigError(f"--gamma: {run}'s sampling takes no γ (its options: {have})")
    extra = {"gamma": gamma} if gamma is not None else {}  # given to every row
    defaults = pipe.cfg.sample.options
    cfg = getattr(defaults, "cfg", 1.0) if cfg is None else cfg
    flow = "sampler" in pipe.options_class.fields()  # a flow run: continuous samplers, a proxy, a diffusers peer
    if flow:
        for name in samplers:
            get(name)  # unknown names fail here, listing the registered ones
    else:
        samplers = (pipe.cfg.generator.name,)
    has_ref = getattr(pipe.generator, "helpers", {}).get("refiner") is not None
    plans = {(s, k): plan_for(pipe, s, k, refiner=has_ref, flow=flow) for s in samplers for k in nfes}
    units = flow + sum(p is not None for p in plans.values())
    units += len(nfes) if flow and "euler" in samplers else 0  # the diffusers peer loop
    bar = tqdm(total=units, desc="bench sample", unit="run", dynamic_ncols=True, disable=not progress)

    def say(line: str) -> None:  # one line per result above the progress bar, on stderr
        bar.update(1)
        if progress:
            bar.write(line, file=sys.stderr)

    note = "FID: given metric"
    if metric is None and use_evals:
        metric, note = fid_metric(pipe, Path(run), n, device)
    elif metric is None:
        note = "FID not requested; quality is the proxy only" if flow else "FID not requested; no quality measure"
    labels = [i % len(pipe.class_names) for i in range(n)]
    with torch.inference_mode():
        _generate(pipe, labels[:batch_size], sampler="euler", steps=2, batch=batch_size, cfg=cfg)  # warm-up
        ref = None
        if flow:
            ref_name, ref_steps = REFERENCE
            ref, _ = _generate(pipe, labels, sampler=ref_name, steps=ref_steps, batch=64, cfg=cfg)
            say(f"reference: {ref_name} {ref.nfe} NFE")
        rows = []
        for name in samplers:
            warm = next((p for k in sorted(nfes) if (p := plans[(name, k)]) is not None), {"steps": 2})
            _generate(pipe, labels[:batch_size], sampler=name, batch=batch_size, cfg=cfg, **warm)  # imports, caches
            for nfe in nfes:
                p = plans[(name, nfe)]
                if p is None:
                    continue
                out, sec = _generate(pipe, labels, sampler=name, batch=batch_size, cfg=cfg, **extra, **p)
                given = {
                    k: v
                    for k, v in {"sampler": name, "cfg": cfg, **extra, **p}.items()
                    if k in pipe.options_class.fields()
                }
                row = {
                    "sampler": name,
                    "budget": nfe,  # the NFE column it was planned for; Heun's Euler last step spends one less
                    "nfe": out.nfe,
                    "steps": getattr(out.options, "steps", None),
                    **({"gamma": out.options.gamma} if hasattr(out.options, "gamma") else {}),
                    **{k: v for k, v in p.items() if k != "steps"},
                    "nfe_by_network": out.nfe_by_network,
                    "ms_per_image": 1000 * sec / n,
                    "gflops_per_image": count_sampling(pipe, options=given)["gflops_per_image"],  # counted
                    "proxy_rmse": _rmse(out.images, ref.images) if ref is not None else None,
                    "fid": float(metric(to_uint8(out.images))) if metric else None,
                }
                rows.append(row)
                say(_format_row(row))
        peer = []
        if flow and "euler" in samplers:  # the peer loop is compared with genlab's Euler
            _generate(pipe, labels[:batch_size], sampler="diffusers-euler", steps=2, batch=batch_size, cfg=cfg)
        for nfe in nfes if flow and "euler" in samplers else ():
            out, sec = _generate(pipe, labels, sampler="diffusers-euler", steps=nfe, batch=batch_size, cfg=cfg)
            ours = next((r for r in rows if r["sampler"] == "euler" and r["budget"] == nfe), None)
            peer.append(
                {
                    "sampler": "diffusers FlowMatchEulerDiscreteScheduler",
                    "nfe": nfe,
                    "ms_per_image": 1000 * sec / n,
                    "proxy_rmse": _rmse(out.images, ref.images),
                    "genlab_euler_ms_per_image": ours["ms_per_image"] if ours else None,
                }
            )
            say(f"diffusers euler {nfe:>3} NFE {peer[-1]['ms_per_image']:8.2f} ms/img")
        if max_batch is None:
            max_batch = 4096 if device.type == "cuda" else 64
        bar.close()
        tp = throughput(pipe, cfg=cfg, start=batch_size, max_batch=max_batch)  # max_batch 0: skipped
    quality = "fid" if metric else "proxy_rmse"
    refiner_module = getattr(pipe.generator, "helpers", {}).get("refiner")
    return {
        "run": str(run),
        "generator": pipe.cfg.generator.name,
        "refiner": str(refiner) if refiner else None,
        "has_refiner": refiner_module is not None,
        "device": _device_name(device),
        "n": n,
        "batch_size": batch_size,
        "cfg": cfg,
        "gamma": gamma if gamma is not None else getattr(defaults, "gamma", None),
        "schedule": "uniform",
        "reference": f"{REFERENCE[0]} at {ref.nfe} NFE, same noise" if ref is not None else None,
        "quality": quality,
        "fid_note": note,
        "rows": rows,
        "peer": peer,
        "throughput": tp,
        "targets": targets(rows, quality),
        "params": pipe.param_counts() | ({"refiner": _count(refiner_module)} if refiner_module is not None else {}),
    }


def check_gamma(gamma: float) -> float:
    """γ of γ-sampling: a finite number in [0, 1] (ConfigError, one line, otherwise)."""
    try:
        return require_finite("--gamma", gamma, low=0.0, high=1.0)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def targets(rows: list[dict], quality: str) -> dict:
    """The issue's two targets: FlowTurbo at Euler-64's quality (speed-up in ms/image) and the best at 8 NFE."""
    out: dict = {}
    e64 = next((r for r in rows if r["sampler"] == "euler" and r["budget"] == 64), None)
    turbo = [r for r in rows if r["sampler"] == "flowturbo"]
    if e64 and turbo:
        good = [r for r in turbo if r[quality] <= e64[quality]]
        best = min(good, key=lambda r: r["ms_per_image"]) if good else None
        out["flowturbo_vs_euler64"] = {
            "euler64": {k: e64[k] for k in ("ms_per_image", quality)},
            "flowturbo": {k: best[k] for k in ("nfe", "blocks", "ms_per_image", quality)} if best else None,
            "speedup": e64["ms_per_image"] / best["ms_per_image"] if best else None,
            "met_2x": bool(best and e64["ms_per_image"] / best["ms_per_image"] >= 2),
        }
    at8 = [r for r in rows if r["budget"] == 8]
    e8 = next((r for r in at8 if r["sampler"] == "euler"), None)
    if at8 and e8:
        best = min(at8, key=lambda r: r[quality])
        out["best_at_8_nfe"] = {
            "best": {k: best[k] for k in ("sampler", "nfe", quality, "ms_per_image")},
            "euler": {k: e8[k] for k in (quality, "ms_per_image")},
        }
    return out


def _count(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _format_row(r: dict) -> str:
    fid = f"{r['fid']:8.2f}" if r.get("fid") is not None else "       -"
    others = list(r.get("nfe_by_network", {}).items())[1:]
    extra = f" {r['blocks']}" + "".join(f" +{k} {name}" for name, k in others) if "blocks" in r else ""
    proxy = f"  proxy {r['proxy_rmse']:.4f}" if r.get("proxy_rmse") is not None else ""
    cost = f" {r['gflops_per_image']:8.4g} GFLOPs/img" if r.get("gflops_per_image") is not None else ""
    return f"{r['sampler']:>9} {r['nfe']:>3} NFE {r['ms_per_image']:8.2f} ms/img{cost}{proxy}  FID {fid}{extra}"


def format_table(result: dict) -> str:
    lines = [
        f"run {result['run']} on {result['device']}: N={result['n']}, batch {result['batch_size']}, cfg {result['cfg']}"
        + (f", γ {result['gamma']:g}" if result.get("gamma") is not None else ""),
        (f"quality proxy: RMS distance to {result['reference']}; " if result["reference"] else "") + result["fid_note"],
        *(_format_row(r) for r in result["rows"]),
        *(
            f"{'diffusers':>9} {p['nfe']:>3} NFE {p['ms_per_image']:8.2f} ms/img  proxy {p['proxy_rmse']:.4f}"
            f"  (FlowMatchEulerDiscreteScheduler loop)"
            for p in result["peer"]
        ),
    ]
    tp = result["throughput"]
    if tp["best"]:
        lines.append(
            f"throughput (euler {tp['nfe']} NFE): "
            + ", ".join(f"batch {r['batch']}: {r['img_per_s']:.1f} img/s" for r in tp["rows"])
        )
    t = result["targets"].get("flowturbo_vs_euler64")
    if t:
        got = t["flowturbo"]
        lines.append(
            "FlowTurbo at Euler-64's quality: "
            + (
                f"{got['blocks']} {got['ms_per_image']:.2f} vs {t['euler64']['ms_per_image']:.2f} ms/img, "
                f"{t['speedup']:.2f}x"
                if got
                else "not reached"
            )  # fmt: skip
        )
    b = result["targets"].get("best_at_8_nfe")
    if b:
        q = result["quality"]
        lines.append(f"best at 8 NFE: {b['best']['sampler']} {q} {b['best'][q]:.4f} vs euler {b['euler'][q]:.4f}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> str:
    """Quality against ms/image, one line per sampler; a message instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    q = result["quality"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in result["rows"]):
        pts = [(r["ms_per_image"], r[q]) for r in result["rows"] if r["sampler"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xscale("log")
    if q == "proxy_rmse" and all((r[q] or 0) > 0 for r in result["rows"]):
        ax.set_yscale("log")
    ax.set_xlabel("ms / image")
    ax.set_ylabel("FID" if q == "fid" else "RMS distance to Heun-127")
    ax.set_title(f"{Path(result['run']).name}: N={result['n']}, batch {result['batch_size']}")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


__all__ = ["DEFAULT_NFES", "DEFAULT_SAMPLERS", "bench_sample", "format_table", "plot", "plan"]


@register("benchmark", "sample")
class SampleBench:
    help = "speed and quality of every sampler (or a generator's steps) at several NFE on a trained run"

    @staticmethod
    def add_arguments(b: argparse.ArgumentParser) -> None:
        b.add_argument("--run", required=True, help="the run directory (a refiner run brings its refiner)")
        b.add_argument("--refiner", metavar="DIR", help="a FlowTurbo refiner run for the run")
        b.add_argument("--n", type=int, default=256, help="images per sampler and NFE (default 256)")
        b.add_argument("--nfe", default="4,8,16,32,64", help="NFE values (default 4,8,16,32,64)")
        b.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS), help="comma-separated")
        b.add_argument("--batch-size", type=int, default=8, help="batch for ms/image (default 8, FlowTurbo's)")
        b.add_argument("--max-batch", type=int, help="largest batch for images/s (default 64 CPU, 4096 GPU; 0 skips)")
        b.add_argument("--cfg", type=float, help="guidance scale (default: the run's)")
        b.add_argument("--gamma", type=float, help="γ in [0, 1] of every row, for a run whose sampling takes one "
                       "(CTM: 0 = deterministic long jumps ... 1 = CM-style multistep; default: the run's)")  # fmt: skip
        b.add_argument("--no-fid", action="store_true", help="skip FID even when genlab.evals is there")
        b.add_argument("--plot", metavar="PNG", help="write FID (or proxy) against ms/image (needs matplotlib)")
        b.add_argument("--out", metavar="JSON", help="also write the JSON result here")
        b.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    @staticmethod
    def run(args: argparse.Namespace) -> dict:
        if args.n < 2:
            raise ConfigError(f"--n must be at least 2, got {args.n}")
        try:
            nfes = tuple(int(v) for v in args.nfe.split(","))
        except ValueError:
            raise ConfigError(f"--nfe must be comma-separated integers, got {args.nfe!r}") from None
        if min(nfes) < 1:  # 1: one-step students (CTM, reflow's distillation) and Euler's single step
            raise ConfigError(f"--nfe values must be >= 1, got {args.nfe!r}")
        if args.gamma is not None:
            check_gamma(args.gamma)  # before the run is loaded
        samplers = tuple(s.strip() for s in args.samplers.split(",") if s.strip())
        result = bench_sample(
            args.run, n=args.n, samplers=samplers, nfes=nfes, batch_size=args.batch_size, cfg=args.cfg,
            refiner=args.refiner, use_evals=not args.no_fid, max_batch=args.max_batch, device=args.device,
            gamma=args.gamma, progress=True,  # a progress bar and one line per result on stderr (--json keeps stdout clean)
        )  # fmt: skip
        result["plot"] = plot(result, Path(args.plot)) if args.plot else "plot skipped: no --plot PATH"
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2))
        return result

    @staticmethod
    def summary(result: dict) -> str:
        return f"{format_table(result)}\n{result['plot']}"
