"""``genlab export diffusers --run RUN --out DIR``: a genlab run as another library's folder (the name mapping is
``genlab.imports.diffusers_dit``'s; this module reads the run and writes the folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genlab.cli.errors import UsageError


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="a run as another library's folder (diffusers)",
                       description="Write a run in another library's format. diffusers: a DiT run under the ddpm "
                                   "objective becomes a DiTPipeline folder (transformer/, scheduler/, vae/).")  # fmt: skip
    e.add_argument("format", choices=["diffusers"], help="diffusers: DiTTransformer2DModel + DDIMScheduler (+ vae)")
    e.add_argument("--run", required=True, help="the run directory")
    e.add_argument("--out", required=True, help="the folder to write (new or empty)")
    e.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from genlab.imports.var import CheckpointError

    try:
        out, note = export_diffusers(args.run, args.out)
    except (CheckpointError, ValueError, FileExistsError) as e:
        raise UsageError(str(e)) from None
    print(f"run {args.run} -> diffusers folder {out}")
    if note:
        print(f"note: {note}")
    return 0


def export_diffusers(run_dir: Path | str, out: Path | str) -> tuple[Path, str]:
    """Write a DiT/DDPM run as a diffusers folder (``DiTPipeline.from_pretrained(out)`` loads it when the run's
    tokenizer is an SD/KL VAE); returns (out, a note for the user, or "")."""
    import dataclasses

    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    from genlab.imports.diffusers_dit import SCHEDULER, to_diffusers
    from genlab.imports.runs import CheckpointError, atomic_folder
    from genlab.pipeline import Pipeline

    pipe = Pipeline.load(run_dir)
    gen, objective = pipe.cfg.generator, pipe.cfg.objective
    if gen.name != "dit" or objective is None or objective.name != "ddpm":
        raise CheckpointError("only DiT runs under the ddpm objective export to diffusers (DiTPipeline is DDPM's)")
    backbone = pipe.generator.backbone
    cfg = dataclasses.asdict(backbone.cfg)
    C, size = backbone.in_channels, backbone.input_size
    config, state = to_diffusers(backbone.state_dict(), cfg, in_channels=C, input_size=size,
                                 num_classes=backbone.num_classes)  # fmt: skip
    transformer = DiTTransformer2DModel(**config)
    transformer.load_state_dict(state, strict=True)
    ocfg = pipe.generator.cfg
    scheduler = DDIMScheduler(**{**{k: v for k, v in SCHEDULER.items() if k != "_class_name"},
                                 "num_train_timesteps": ocfg.num_steps, "beta_start": ocfg.beta_start,
                                 "beta_end": ocfg.beta_end})  # fmt: skip
    notes = []
    with atomic_folder(out) as tmp:
        if pipe.tokenizer.cfg.__class__.__qualname__.startswith("SDVAETokenizer"):
            vae = pipe.tokenizer.vae
            vae.register_to_config(scaling_factor=pipe.tokenizer.scaling_factor)
            if pipe.tokenizer.shift_factor:
                notes.append("DiTPipeline ignores the VAE's shift_factor; decode its latents with genlab")
            DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler).save_pretrained(tmp)
        else:
            transformer.save_pretrained(tmp / "transformer")
            scheduler.save_pretrained(tmp / "scheduler")
            notes.append(f"the run's tokenizer ({pipe.cfg.tokenizer.name}) is not a diffusers VAE: no vae/ folder")
        side = {"time_freq_shift": cfg["time_freq_shift"], "class_names": pipe.class_names,
                "sample": _jsonable(dataclasses.asdict(pipe.sample_options({})))}  # fmt: skip
        (tmp / "genlab.json").write_text(json.dumps(side, indent=2))
    if cfg["time_freq_shift"] != 1.0:
        notes.append(f"diffusers embeds time with downscale_freq_shift=1, this run with {cfg['time_freq_shift']:g}: "
                     f"in diffusers its outputs differ by up to {_probe(backbone, transformer):.3g} on a probe; "
                     "`genlab import diffusers-dit` restores the run exactly")  # fmt: skip
    return Path(out), "; ".join(notes)


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _probe(backbone, transformer) -> float:
    """max |genlab - diffusers| of the two models' outputs on one random batch at steps 0, 500, 999."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, backbone.in_channels, backbone.input_size, backbone.input_size, generator=g)
    n, y = torch.tensor([0, 500, 999]), torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        ours = backbone(x, n.double() / 1000, y)
        theirs = transformer(x, timestep=n, class_labels=y).sample
    return (ours - theirs).abs().max().item()
