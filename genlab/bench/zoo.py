"""Benchmark ``zoo``: every family side by side at one budget (issue 28).

Each row trains a family's OpenMoji quickstart recipe (its preset; a frozen tokenizer trained once per tokenizer
recipe and shared by the rows that use it) with the **same optimizer steps x batch** for every generator: the
budget does not depend on the machine's load (the runs' weights do not either), and the table's training-time column
shows what the budget costs each family. Then it samples ``n`` images (image i: class i mod K, seed i) at each of
the row's sampling points, timed, and scores them with one FID against the training images (genlab.evals, the
offline Inception), beside the real-vs-real floor at the same n (n training images against all of them) and
the counted GFLOPs per image (``genlab.bench.cost``).

Everything is a run folder under ``--out``: ``tokenizers/NAME`` (+ ``NAME-cache``), ``rows/NAME``; each finished
stage writes ``results/NAME.json``, so running the same command again skips what is done and resumes an interrupted
training (``--resume auto``). ``zoo.json``, ``zoo.md`` (the table) and ``zoo.png`` (FID against sampling cost) are
rewritten from the results at the end. ``--tiny`` is the test suite's mode: two smoke presets, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from genlab.config import ConfigError
from genlab.registry import register


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer recipe, trained once per zoo and frozen for the rows that name it."""

    preset: str  # its `task: tokenizer` preset
    cache: bool = True  # the rows train on its cached token ids (`genlab cache --flips`); else on images


@dataclass(frozen=True)
class Row:
    """One family's recipe: a generator preset (its `data`/`tokenizer` paths are pointed at the zoo's own)."""

    name: str  # the row's id and run folder
    family: str  # what the table calls it
    preset: str
    tokenizer: str | None = None  # a TOKENIZERS key; None: the preset's own (pixels, or an inline tokenizer)
    teacher: str | None = None  # a row whose run is this one's teacher (few-step students); trained first
    points: tuple[tuple[str, dict], ...] = (("preset's", {}),)  # (label, sampling options changed), default first
    overrides: tuple[str, ...] = ()  # the recipe's own changes to its preset


# the flow rows' sampling: UniPC at 16 steps (Euler-64's FID on the quickstart model at a quarter of its cost,
# benchmarks/README.md), the pixel DiT at 8 steps too; every other row samples at its preset's defaults
UNIPC = ("unipc-16", {"sampler": "unipc", "steps": 16})
FLOW_POINTS = (UNIPC,)
DIT_POINTS = (UNIPC, ("unipc-8", {"sampler": "unipc", "steps": 8}))
TOKENIZERS = {
    "kl-vae": Tokenizer("quickstart-vae"),
    "vq": Tokenizer("quickstart-vq"),
    "msvq": Tokenizer("quickstart-msvq", cache=False),
    "flexvq": Tokenizer("quickstart-flexvq", cache=False),
    "rq": Tokenizer("quickstart-rq"),
    "titok": Tokenizer("quickstart-titok"),
    "flextok": Tokenizer("quickstart-flextok"),
}
ROWS = (
    Row("dit", "DiT (pixels, patch 4)", "quickstart", points=DIT_POINTS),
    Row("dit-latent", "DiT (KL-VAE latents)", "quickstart-latent", "kl-vae", points=FLOW_POINTS),
    Row("lightningdit", "LightningDiT (KL-VAE latents)", "quickstart-lightningdit", "kl-vae", points=FLOW_POINTS),
    Row("lamamba", "LaMamba-Diff (pixels)", "quickstart-lamamba", points=FLOW_POINTS),
    Row("dimr", "DiMR (pixels)", "quickstart-dimr", points=FLOW_POINTS),
    Row("reflow", "DiT + 1 reflow round", "quickstart-fewstep", teacher="dit", points=(("euler-1", {}),)),
    Row("maskgit", "MaskGIT (VQ 8x8)", "quickstart-maskgit", "vq"),
    Row("enat", "ENAT (VQ 8x8)", "quickstart-enat", "vq"),
    Row("gpt", "GPT (VQ 8x8, raster)", "quickstart-gpt", "vq"),
    Row("var", "VAR (multi-scale VQ)", "quickstart-var", "msvq"),
    Row("flexvar", "FlexVAR (multi-scale VQ)", "quickstart-flexvar", "flexvq"),
    Row("resgen", "ResGen (RVQ depth 4)", "quickstart-resgen", "rq"),
    Row("titok-maskgit", "MaskGIT (TiTok 1-D)", "quickstart-titok-maskgit", "titok"),
    Row("flextok-gpt", "GPT (FlexTok 1-D)", "quickstart-flextok-gpt", "flextok"),
)
# the test suite's zoo: two generators on inline tokenizers, digits, seconds
TINY_ROWS = (Row("dit", "DiT (smoke)", "smoke", points=(("euler-4", {"steps": 4}),)),
             Row("maskgit", "MaskGIT (smoke)", "smoke-maskgit"))  # fmt: skip


@dataclass
class Budget:
    steps: int  # optimizer steps of every generator
    batch: int  # images per step
    n: int  # images sampled per point (and the floor's)
    tokenizer_steps: int | None = None  # None: each tokenizer preset's own
    device: str = "cpu"
    sample_batch: int = 100
    precision: str = "fp32"  # sampling compute dtype (Pipeline.generate): fp32, or bf16 (~2x faster on a CPU)


@dataclass
class Zoo:
    out: Path
    budget: Budget
    rows: tuple[Row, ...]
    tiny: bool = False

    def results(self, name: str) -> dict:
        path = self.out / "results" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, name: str, result: dict) -> None:
        path = self.out / "results" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, path)  # a result is either whole or absent

    # ---------------------------------------------------------------- training

    def tokenizer(self, key: str) -> dict:
        """The tokenizer recipe ``key`` trained (and cached) once; its result."""
        done = self.results(f"tokenizer-{key}")
        if done:
            return done
        tok, run = TOKENIZERS[key], self.out / "tokenizers" / key
        steps = () if self.budget.tokenizer_steps is None else (f"train.steps={self.budget.tokenizer_steps}",)
        seconds = _cli("train", "--preset", tok.preset, "--out", str(run), "--resume", "auto", *steps)
        result = {"preset": tok.preset, "run": str(run), "train_seconds": seconds, "load": _load(),
                  "parameters": _parameters(run / "tokenizer"), "steps": _config_steps(run)}  # fmt: skip
        if tok.cache:
            cache = self.out / "tokenizers" / f"{key}-cache"
            result["cache"] = str(cache)
            result["cache_seconds"] = _cli("cache", "--tokenizer", str(run), "--flips", "--out", str(cache))
        self.save(f"tokenizer-{key}", result)
        return result

    def train(self, row: Row) -> dict:
        done = self.results(row.name).get("train")
        if done:
            return done
        run = self.out / "rows" / row.name
        overrides = [*row.overrides, f"train.steps={self.budget.steps}", f"train.batch_size={self.budget.batch}"]
        tok = None
        if row.tokenizer:
            tok = self.tokenizer(row.tokenizer)
            overrides.append(f"tokenizer.path={tok['run']}")
            if "cache" in tok:
                overrides.append(f"data.path={tok['cache']}")
        if row.teacher:
            overrides.append(f"teacher.run={self.out / 'rows' / row.teacher}")
        if self.tiny:
            overrides += ["train.checkpoint_every=0", "train.sample_every=0", "train.log_every=1"]
        seconds = _cli("train", "--preset", row.preset, "--out", str(run), "--resume", "auto", *overrides)
        done = {"run": str(run), "preset": row.preset, "overrides": overrides, "train_seconds": seconds,
                "load": _load(), "threads": os.environ.get("OMP_NUM_THREADS"), "tokenizer": row.tokenizer,
                "tokenizer_train_seconds": (tok or {}).get("train_seconds")}  # fmt: skip
        self.save(row.name, {**self.results(row.name), "train": done})
        return done

    # ---------------------------------------------------------------- measuring

    def measure(self, row: Row) -> dict:
        """Every sampling point of a trained row: FID, ms/image, GFLOPs/image (each point saved when done)."""
        from genlab.bench.cost import count_sampling
        from genlab.pipeline import Pipeline

        result = self.results(row.name)
        points = result.setdefault("points", {})
        todo = [(label, opts) for label, opts in row.points if label not in points]
        if not todo:
            return result
        pipe = Pipeline.load(result["train"]["run"], device=torch.device(self.budget.device)).eval()
        result["parameters"] = pipe.param_counts()
        result["tokenizer_name"] = pipe.cfg.tokenizer.name
        score = self.scorer(pipe)
        for label, given in todo:
            options = pipe.sample_options(given)
            images, seconds = self.sample(pipe, options, f"{row.name} {label}")
            cost = count_sampling(pipe, options=options)
            points[label] = {"options": {k: str(v) for k, v in given.items()}, "fid": score(images),
                             "ms_per_image": 1000 * seconds / len(images), "gflops_per_image": cost["gflops_per_image"],
                             "nfe": cost["nfe"], "load": _load(), "threads": torch.get_num_threads()}  # fmt: skip
            self.save(row.name, result)
        return result

    def sample(self, pipe, options, desc: str) -> tuple[torch.Tensor, float]:
        from genlab.data import to_uint8

        n, k, bs = self.budget.n, len(pipe.class_names), self.budget.sample_batch
        labels, parts, seconds = [i % k for i in range(n)], [], 0.0
        for start in tqdm(range(0, n, bs), desc=f"sample {desc}", unit="batch", leave=False):
            t0 = time.perf_counter()
            out = pipe.generate(
                labels[start : start + bs], seed=start, options=options, batch_size=bs, precision=self.budget.precision
            )
            seconds += time.perf_counter() - t0
            parts.append(to_uint8(out.images))
        return torch.cat(parts), seconds  # (n, 3, H, W) uint8

    def scorer(self, pipe):
        """FID against the run's training images (statistics cached by genlab.evals), and the floor."""
        from genlab import evals
        from genlab.data.cache import training_images
        from genlab.evals.sources import ImageSource

        name, options, split = training_images(pipe.cfg.data)
        net = evals.resolve(device=self.budget.device)
        resolution = pipe.cfg.data.cfg.resolution
        ref = evals.dataset_reference(name, resolution, net, split=split, options=options, progress=True)[0]
        key = f"{name}/{split}/{resolution}px"
        if key not in self.results("floor"):
            self.save("floor", {**self.results("floor"), key: _floor(ref, self.budget.n)})

        class Images(ImageSource):
            def __init__(self, images):
                self.images, self.n, self.resolution, self.description = images, len(images), images.shape[-1], "zoo"

            def batch(self, start: int, stop: int):
                return self.images[start:stop]

        def fid(images) -> float:
            return float(evals.evaluate(Images(images), ref, net, ["fid"], progress=True).metrics["fid"])

        return fid

    def run(self) -> dict:
        started = time.time()
        for row in self.rows:
            for dep in [r for r in (*ROWS, *TINY_ROWS) if r.name == row.teacher][:1]:
                self.train(dep)
            self.train(row)
            self.measure(row)
        report = self.report()
        report["seconds_this_call"] = time.time() - started
        return report

    def report(self) -> dict:
        from genlab.bench.zoo_report import write_report

        # every row this zoo folder holds results of (earlier calls' --families too), in the table's order
        done = [r for r in (TINY_ROWS if self.tiny else ROWS) if self.results(r.name).get("points")]
        rows = [{"name": r.name, "family": r.family, **self.results(r.name)} for r in done]
        tokenizers = {k: self.results(f"tokenizer-{k}") for k in {r.tokenizer for r in done if r.tokenizer}}
        meta = {"budget": vars(self.budget), "floor": self.results("floor"), "machine": _machine(), "load_end": _load(),
                "command": "genlab bench zoo " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "zoo"] else ""}  # fmt: skip
        return write_report(self.out, rows, tokenizers, meta)


def _cli(*argv: str) -> float:
    """Run a genlab command in a child process (each training gets its own accelerate state, threads and
    memory); its wall seconds. A failing stage stops the zoo with the child's exit status named."""
    t0 = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "genlab", *argv]).returncode
    if code:
        raise ConfigError(f"zoo: `genlab {' '.join(argv)}` failed (exit {code}); fix it and run the zoo again")
    return time.perf_counter() - t0


def _floor(ref, n: int) -> float | None:
    """FID of n of the reference's own images (a fixed random subset) against all of them: the best a perfect
    generator scores at this n. None when n covers the whole set (0 by construction)."""
    from genlab.evals.base import gaussian_stats
    from genlab.evals.metrics import frechet_distance

    if ref.features is None or n >= len(ref.features):
        return None
    pick = torch.randperm(len(ref.features), generator=torch.Generator().manual_seed(0))[:n]
    mu, sigma = gaussian_stats(torch.from_numpy(ref.features[pick.numpy()]))
    return float(frechet_distance(mu, sigma, ref.mu, ref.sigma))


def _parameters(component: Path) -> int | None:
    from safetensors import safe_open

    path = component / "model.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def _config_steps(run: Path) -> int | None:
    import yaml

    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()).get("train", {}).get("steps") if path.is_file() else None


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


@register("benchmark", "zoo")
class ZooBench:
    help = "every family's quickstart recipe at one budget: FID, sampling ms and GFLOPs per image, one table"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        from genlab.pipeline import PRECISIONS

        names = ", ".join(r.name for r in ROWS)
        parser.add_argument("--out", default="runs/zoo", help="the zoo's folder (runs, results, table, plot)")
        parser.add_argument("--families", help=f"a subset, comma-separated, in the table's order; of: {names}")
        parser.add_argument("--steps", type=int, default=1000, help="optimizer steps of every generator (1000)")
        parser.add_argument("--batch", type=int, default=64, help="images per step of every generator (64)")
        parser.add_argument("--tokenizer-steps", type=int, help="steps of every tokenizer (default: each preset's)")
        parser.add_argument("--n", type=int, default=1000, help="images sampled per point and for the floor (1000)")
        parser.add_argument("--device", default="cpu", help="cpu or cuda")
        parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="sampling compute dtype: fp32 "
                            "(default, exact) or bf16 (autocast, ~1.65x faster here, FID within 0.2)")  # fmt: skip
        parser.add_argument("--tiny", action="store_true", help="two smoke presets, seconds (the test suite's)")

    @staticmethod
    def run(args: argparse.Namespace) -> dict:
        return zoo_from_args(args).run()

    @staticmethod
    def summary(result: dict) -> str:
        return result["markdown"] + f"\ntable: {result['files']['table']}, plot: {result['files']['plot']}"


def zoo_from_args(args: argparse.Namespace) -> Zoo:
    rows = TINY_ROWS if args.tiny else ROWS
    if args.families:
        wanted = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in {r.name for r in rows}]
        if unknown or not wanted:
            raise ConfigError(f"--families: unknown {', '.join(unknown) or '(none given)'}; "
                              f"known: {', '.join(r.name for r in rows)}")  # fmt: skip
        rows = tuple(next(r for r in rows if r.name == name) for name in dict.fromkeys(wanted))  # run in this order
    for value, flag, top in ((args.steps, "--steps", 10**7), (args.batch, "--batch", 4096), (args.n, "--n", 10**6),
                             (args.tokenizer_steps, "--tokenizer-steps", 10**7)):  # fmt: skip
        if value is not None and not 1 <= value <= top:
            raise ConfigError(f"{flag} must be in [1, {top:,}], got {value:,}")
    if args.n < 2:
        raise ConfigError(f"--n must be at least 2 (FID needs a covariance), got {args.n}")
    budget = Budget(args.steps, args.batch, args.n, args.tokenizer_steps, args.device, min(100, args.n), args.precision)
    return Zoo(Path(args.out), budget, rows, tiny=args.tiny)
