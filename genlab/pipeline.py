"""A run as one object: tokenizer + objective(backbone) + class names + sampling defaults.

``Pipeline.from_config`` builds a fresh one (for training or counting parameters),
``Pipeline.load(run_dir)`` a trained one from ``runs/NAME/``. Layout of a run directory:

    config.yaml                       the fully resolved run config
    class_names.json                  class id -> name
    tokenizer/{config.json, model.safetensors}
    generator/{config.json, model.safetensors}   (EMA weights of the backbone)
    refiner/{config.json, model.safetensors}     (only in a FlowTurbo refiner run, whose config names its base run)
    checkpoints/step_XXXXXXX/          accelerate state
    samples/step_XXXXXXX.png
    metrics.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from genlab import registry
from genlab.config import ConfigError, RunConfig, to_dict
from genlab.data import to_uint8
from genlab.generators.refiner import load_refiner
from genlab.grids import save_grid  # noqa: F401  (launch.py, demo.py and cli.py import it from here)
from genlab.samplers import SampleResult
from genlab.tokenizers.saved import tokenizer_spec

RUN_FILES = ("config.yaml", "class_names.json", "generator/model.safetensors", "tokenizer/config.json")


class RunError(RuntimeError):
    """A run directory that is missing or incomplete; the message names what is missing."""


def dataset_info(cfg: RunConfig) -> tuple[int, int]:
    """(resolution, num_classes) of the configured dataset, without loading it."""
    cls = registry.get("dataset", cfg.data.name)
    return cfg.data.cfg.resolution, cls.num_classes(cfg.data.cfg)


@dataclass
class Generated:
    images: Tensor  # (B, 3, H, W) float in [-1, 1]
    labels: Tensor  # (B,)
    nfe: int
    seconds: float
    refiner_nfe: int = 0  # FlowTurbo refiner evaluations per image (not counted in nfe)


class Pipeline(nn.Module):
    def __init__(self, cfg: RunConfig, tokenizer: nn.Module, objective: nn.Module, class_names: list[str]):
        super().__init__()
        self.cfg, self.tokenizer, self.objective = cfg, tokenizer, objective
        self.class_names = list(class_names)
        self.refiner: nn.Module | None = None  # a FlowTurbo velocity refiner, used by sampler "flowturbo"

    @classmethod
    def from_config(cls, cfg: RunConfig, class_names: list[str] | None = None, *, device=None) -> Pipeline:
        resolution, num_classes = dataset_info(cfg)
        if class_names is not None:
            num_classes = len(class_names)
        with torch.device(device or "cpu"):
            tokenizer = cfg.tokenizer.build(resolution=resolution)
            spec = tokenizer.token_spec
            if spec.kind != "continuous":
                raise ConfigError(f"generator {cfg.generator.name} needs continuous tokens, got {spec.kind}")
            try:
                backbone = cfg.generator.build(in_channels=spec.channels, input_size=spec.size, num_classes=num_classes)
            except ValueError as e:
                raise ConfigError(f"generator: {e}") from None
            objective = cfg.objective.build(backbone)
        names = class_names or [str(i) for i in range(num_classes)]
        return cls(cfg, tokenizer, objective, names)

    @property
    def backbone(self) -> nn.Module:
        return self.objective.backbone

    def param_counts(self) -> dict[str, int]:
        return {
            "generator": sum(p.numel() for p in self.backbone.parameters()),
            "tokenizer": sum(p.numel() for p in self.tokenizer.parameters()),
        }

    # ------------------------------------------------------------------ disk

    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for part, module, cfg in (
            ("generator", self.backbone, self.cfg.generator),
            ("tokenizer", self.tokenizer, self.cfg.tokenizer),
        ):
            d = run_dir / part
            d.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(d / "model.safetensors"))
            spec = tokenizer_spec(module, cfg) if part == "tokenizer" else to_dict(cfg)
            (d / "config.json").write_text(json.dumps(spec, indent=2))
        (run_dir / "class_names.json").write_text(json.dumps(self.class_names, indent=2))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, run_dir: Path | str, *, device=None, refiner: Path | str | None = None) -> Pipeline:
        """A trained run. A FlowTurbo refiner run loads its base run with the refiner attached; ``refiner``
        attaches the one of another refiner run."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunError(
                f"run directory {run_dir} does not exist; train one with `genlab train --preset NAME --out {run_dir}`"
            )
        base = _refiner_base(run_dir)
        if base is not None:
            return cls.load(base, device=device, refiner=run_dir)
        _require_files(
            run_dir, RUN_FILES, "genlab run", "finish or resume its training with `genlab train ... --resume auto`"
        )
        cfg = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
        own_copy = cfg.tokenizer.name == "run"  # built from this run's tokenizer/ (weights included), not the original
        if own_copy:
            cfg.tokenizer = dataclasses.replace(
                cfg.tokenizer, cfg=dataclasses.replace(cfg.tokenizer.cfg, path=str(run_dir))
            )
        class_names = json.loads((run_dir / "class_names.json").read_text())
        pipe = cls.from_config(cfg, class_names)
        pipe.backbone.load_state_dict(load_file(str(run_dir / "generator" / "model.safetensors")))
        tok_file = run_dir / "tokenizer" / "model.safetensors"
        if tok_file.is_file() and not own_copy:
            pipe.tokenizer.load_state_dict(load_file(str(tok_file)))
        if refiner is not None:
            pipe.attach_refiner(refiner)
        return pipe.to(device or "cpu").eval()

    def attach_refiner(self, refiner_run: Path | str) -> None:
        """Load the velocity refiner of a FlowTurbo refiner run (``genlab train --preset flowturbo-refiner``)."""
        folder = Path(refiner_run) / "refiner"
        if not (folder / "model.safetensors").is_file():
            raise RunError(
                f"{refiner_run} has no trained refiner ({folder}/model.safetensors); "
                "train one with `genlab train --preset flowturbo-refiner base_run=RUN --out DIR`"
            )
        spec = self.tokenizer.token_spec
        ref = load_refiner(folder)
        if (ref.in_channels, ref.input_size, ref.num_classes) != (spec.channels, spec.size, self.backbone.num_classes):
            raise RunError(f"the refiner in {refiner_run} was trained for another model (tokens or classes differ)")
        device = next(self.backbone.parameters()).device
        self.refiner = ref.to(device)

    # ------------------------------------------------------------------ sampling

    def class_ids(self, spec: str | list) -> list[int]:
        """Class ids from ``"0,3,5"``, names (``"Flags,Food & Drink"``) or ``"all"``."""
        items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
        if items == ["all"]:
            return list(range(len(self.class_names)))
        lower = {n.lower(): i for i, n in enumerate(self.class_names)}
        ids = []
        for item in items:
            if item.lstrip("-").isdigit():
                i = int(item)
                if not 0 <= i < len(self.class_names):
                    raise ValueError(
                        f"class id {i} is out of range; this run has classes 0..{len(self.class_names) - 1}"
                    )
                ids.append(i)
            elif item.lower() in lower:
                ids.append(lower[item.lower()])
            else:
                raise ValueError(f"unknown class {item!r}; classes: {', '.join(self.class_names)}")
        if not ids:
            raise ValueError("no classes given")
        return ids

    @torch.no_grad()
    def generate(
        self,
        labels: list[int] | Tensor,
        *,
        seed: int = 0,
        steps: int | None = None,
        cfg: float | None = None,
        sampler: str | None = None,
        batch_size: int = 64,
        **options,
    ) -> Generated:
        """Images for ``labels``; image i uses seed ``seed + i`` whatever ``batch_size`` is.

        ``options`` go to ``RectifiedFlow.sample`` and the sampler (``guidance_interval``, ``guidance_schedule``,
        ``schedule``, ``shift``, ``blocks``, ``compile``, ...); sampler "flowturbo" gets the attached refiner."""
        s = self.cfg.sample
        steps = s.steps if steps is None else steps
        cfg = s.cfg if cfg is None else cfg
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if cfg < 0:
            raise ValueError(f"cfg must be >= 0, got {cfg}")
        labels = torch.as_tensor(labels, dtype=torch.long)
        device = next(self.backbone.parameters()).device
        spec = self.tokenizer.token_spec
        sampler = sampler or s.sampler
        if s.shift != 1.0:  # the run's sampling defaults; options from the caller (CLI flags) win
            options.setdefault("shift", s.shift)
        if tuple(s.cfg_interval) != (0.0, 1.0):
            options.setdefault("guidance_interval", tuple(s.cfg_interval))
        if sampler == "flowturbo" and self.refiner is not None:
            options.setdefault("refiner", self.refiner)
        out, nfe, rnfe, t0 = [], 0, 0, time.perf_counter()
        for start in range(0, len(labels), batch_size):
            y = labels[start : start + batch_size].to(device)
            seeds = torch.arange(seed + start, seed + start + len(y), dtype=torch.long)
            res: SampleResult = self.objective.sample(
                y, seeds, shape=spec.shape, sampler=sampler, steps=steps, cfg=cfg,
                guidance_channels=s.guidance_channels, **options,
            )  # fmt: skip
            out.append(self.tokenizer.decode(res.x).clamp(-1, 1).cpu())
            nfe, rnfe = res.nfe, res.refiner_nfe
        return Generated(torch.cat(out), labels, nfe, time.perf_counter() - t0, rnfe)


def _refiner_base(run_dir: Path) -> Path | None:
    """The base run of a FlowTurbo refiner run (relative paths are tried from the cwd, then from the run), else None."""
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        return None
    data = yaml.safe_load(cfg_file.read_text()) or {}
    if not isinstance(data, dict) or data.get("task") != "flowturbo-refiner":
        return None
    base = Path(str(data.get("base_run", "")))
    if not base.is_absolute() and not base.is_dir() and (run_dir / base).is_dir():
        base = run_dir / base
    return base


def class_grid(pipe: Pipeline, per_class: int, *, seed: int = 0, **kw) -> Generated:
    """One row per class, ``per_class`` images each."""
    labels = [c for c in range(len(pipe.class_names)) for _ in range(per_class)]
    return pipe.generate(labels, seed=seed, **kw)


# ----------------------------------------------------------------------------- tokenizer runs (task: tokenizer)

TOKENIZER_RUN_FILES = ("config.yaml", "tokenizer/config.json", "tokenizer/model.safetensors")


def save_tokenizer(cfg: RunConfig, tokenizer: nn.Module, run_dir: Path, class_names: list[str]) -> None:
    """A trained tokenizer run: config.yaml, class_names.json, tokenizer/{config.json, model.safetensors}."""
    run_dir = Path(run_dir)
    d = run_dir / "tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in tokenizer.state_dict().items()}
    save_file(state, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps(to_dict(cfg.tokenizer), indent=2))
    (run_dir / "class_names.json").write_text(json.dumps(list(class_names), indent=2))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _require_files(run_dir: Path, files: tuple[str, ...], what: str, hint: str) -> None:
    """RunError naming every file of ``files`` missing under ``run_dir``, and what to do."""
    missing = [f for f in files if not (run_dir / f).is_file()]
    if missing:
        raise RunError(f"{run_dir} is not a finished {what} (missing {', '.join(missing)}); {hint}")


def load_tokenizer(run_dir: Path | str, *, device=None) -> tuple[RunConfig, nn.Module]:
    """(config, tokenizer in eval mode) of a run trained with ``task: tokenizer``."""
    run_dir = Path(run_dir)
    _require_files(
        run_dir, TOKENIZER_RUN_FILES, "tokenizer run", "train one with `genlab train --preset smoke-vq --out DIR`"
    )
    cfg = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
    tokenizer.load_state_dict(load_file(str(run_dir / "tokenizer" / "model.safetensors")))
    return cfg, tokenizer.to(device or "cpu").eval()


@torch.no_grad()
def reconstruction_metrics(tokenizer: nn.Module, images: Tensor, batch_size: int = 64) -> dict[str, float]:
    """PSNR (dB) and SSIM (mean over images, on uint8 values) of encode -> decode, and for discrete tokenizers the
    codebook usage (fraction of codes used over all of ``images``) and perplexity of the code histogram."""
    device = next(tokenizer.parameters()).device
    psnrs, ssims, hist = [], [], None
    vocab = tokenizer.token_spec.vocab_size
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        if vocab:
            tokens = tokenizer.encode(x)
            recon = tokenizer.decode(tokens).clamp(-1, 1)
        else:
            recon = tokenizer.roundtrip(x).clamp(-1, 1)
        a, b = to_uint8(x).float(), to_uint8(recon).float()
        mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
        psnrs.append(10 * torch.log10(255.0**2 / mse).cpu())
        ssims.append(ssim(a, b).cpu())
        if vocab:
            flat = torch.cat([t.flatten() for t in tokens]) if isinstance(tokens, list) else tokens.flatten()
            h = torch.bincount(flat.cpu(), minlength=vocab).double()
            hist = h if hist is None else hist + h
    out = {"psnr": torch.cat(psnrs).mean().item(), "ssim": torch.cat(ssims).mean().item(), "n": len(images)}
    if hist is not None:
        p = hist / hist.sum()
        out["usage"] = (hist > 0).double().mean().item()
        out["perplexity"] = torch.exp(-(p * p.clamp_min(1e-12).log()).sum()).item()
    return out


def ssim(a: Tensor, b: Tensor, *, peak: float = 255.0) -> Tensor:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) per image (B,), averaged over
    channels and valid window positions; images (B, C, H, W) in [0, peak]. Sides under 11 use the whole side."""
    import torch.nn.functional as F

    k = min(11, a.shape[-1], a.shape[-2])
    g = torch.exp(-((torch.arange(k, dtype=torch.float64) - (k - 1) / 2) ** 2) / (2 * 1.5**2))
    g = (g / g.sum()).float().to(a.device)
    window = (g[:, None] * g[None, :]).expand(a.shape[1], 1, k, k)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=a.shape[1])

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
