"""A diffusers ``AutoencoderKL`` folder (``stabilityai/sd-vae-ft-ema``, SDXL's, a FLUX-style shifted VAE) as a
self-contained genlab tokenizer run: the folder's config goes into ``tokenizer.vae_config``, its weights into the
run's ``tokenizer/model.safetensors``, and its ``scaling_factor`` and ``shift_factor`` are spelled out in the
config, so the run encodes z' = (z - shift) * scale whatever folder it came from (safetensors weights only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from genlab.config import load_preset_dict
from genlab.imports.runs import CheckpointError, check_out, sd_vae_tokenizer, write_tokenizer_run
from genlab.registry import register


def import_sd_vae(folder: Path | str, out: Path | str, *, resolution: int = 256) -> Path:
    folder = Path(folder)
    if not list(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder}: no .safetensors weights (genlab reads no pickled .bin)")
    out = check_out(out)
    tok, state, factor = sd_vae_tokenizer(folder)
    if resolution % factor:
        raise CheckpointError(f"this VAE downsamples by {factor}; --resolution {resolution} is not a multiple of it")
    config = load_preset_dict("imagenet256/_vae")
    config["tokenizer"] = tok
    config["data"]["resolution"] = resolution
    config["preset"] = f"imported from {folder.name} (diffusers AutoencoderKL)"
    return write_tokenizer_run(out, config, tok, state)


@register("importer", "sd-vae")
class SDVAEImporter:
    help = "a diffusers AutoencoderKL folder (sd-vae-ft-ema, SDXL's, shifted VAEs) as a self-contained tokenizer run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--resolution", type=int, default=256, help="the image size the run encodes (256)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_sd_vae(path, out, resolution=args.resolution)
