"""LightningDiT's VA-VAE (hustvl/LightningDiT ``vavae-imagenet256-f16d32-dinov2.pt``, Yao et al. 2025) as a genlab
``va-vae`` tokenizer run, which ``genlab import lightningdit --vae RUN`` then samples on.

The checkpoint is LDM's AutoencoderKL (``tokenizer/autoencoder.py``: "exactly the same architecture as the LDM VAE"),
a Lightning ``{"state_dict": ...}`` or a bare state dict, read with ``torch.load(weights_only=True)``. Its training
extras (``loss.*``: LPIPS, discriminator; ``foundation_model.*``: DINOv2; the VF loss' ``linear_proj``) are dropped,
as LightningDiT's own loader drops ``loss``. The mapping is VAR's VQVAE's (LDM's naming, ``genlab.imports.var``):
``{encoder,decoder}.down/up.{i}.block.{j}`` and ``.attn.{j}`` -> genlab's interleaved ``blocks.{n}`` (the decoder's
levels reversed into decoding order), ``mid.block_1 / attn_1 / block_2`` -> ``mid.0 / 1 / 2``, LDM's q, k, v convs as
they are; ``quant_conv`` (2z -> 2C) and ``post_quant_conv`` (C -> z) keep their names. Widths, levels, res blocks,
attention levels and channels are read off the weights; GroupNorm 32, eps 1e-6 on both sides.

Latent statistics: LightningDiT normalises latents with the channel mean and std of ``latents_stats.pt`` (released
beside the models; ``{"mean", "std"}`` of shape (1, C, 1, 1)) times ``latent_multiplier`` (1.0 for VA-VAE): given with
``--stats``, they become the run's ``latent_mean`` / ``latent_std``; without them the run is refused unless ``--raw``
(latents as the encoder gives them, ``normalize: none``). LightningDiT encodes with a posterior sample
(``VA_VAE.encode_images``): the run says ``sample_posterior: true``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import Tensor

from genlab.config import component_from_dict, load_preset_dict, to_dict
from genlab.imports.checks import CheckpointError, converting, finite
from genlab.imports.checks import tensor as need
from genlab.imports.llamagen import load_checkpoint
from genlab.imports.runs import fill_and_check, load_state_dict, write_tokenizer_run
from genlab.imports.var import _convnet_keys as convnet_keys
from genlab.registry import register

WHAT = "VA-VAE (LDM AutoencoderKL)"
_TRAINING_ONLY = ("loss.", "foundation_model.", "linear_proj.", "model_ema.")  # not part of the autoencoder


def _count(sd: dict[str, Tensor], pattern: str) -> int:
    found = [int(m.group(1)) for k in sd if (m := re.match(pattern, k))]
    if not found:
        raise CheckpointError(f"not a {WHAT} checkpoint: no tensor matches {pattern!r}")
    return 1 + max(found)


def vavae_config(sd: dict[str, Tensor]) -> dict:
    """genlab's ``va-vae`` config (net, embed_dim) read off an LDM AutoencoderKL state dict."""
    ch = need(sd, "encoder.conv_in.weight", WHAT, ndim=4).shape[0]
    levels = _count(sd, r"encoder\.down\.(\d+)\.")
    blocks = _count(sd, r"encoder\.down\.0\.block\.(\d+)\.")
    widths = [need(sd, f"encoder.down.{i}.block.0.conv1.weight", WHAT, ndim=4).shape[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise CheckpointError(f"not a {WHAT} checkpoint: its widths {widths} are not multiples of conv_in's {ch}")
    moments = need(sd, "quant_conv.weight", WHAT, ndim=4)  # (2C, 2z, 1, 1)
    z2 = need(sd, "encoder.conv_out.weight", WHAT, ndim=4).shape[0]
    if z2 % 2 or moments.shape[0] % 2 or moments.shape[1] != z2:
        raise CheckpointError(f"not a {WHAT} checkpoint: quant_conv {tuple(moments.shape)} is not 2z -> 2C")
    net = {"ch": ch, "ch_mult": [w // ch for w in widths], "num_res_blocks": blocks,
           "attn_levels": [i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in sd],
           "mid_attn": "encoder.mid.attn_1.q.weight" in sd, "z_channels": z2 // 2, "norm_groups": 32}  # fmt: skip
    return {"name": "va-vae", "net": net, "embed_dim": moments.shape[0] // 2}


def convert_vavae(sd: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """(genlab va-vae config, the autoencoder's state dict in genlab's names) of an LDM AutoencoderKL state dict."""
    sd = {k: v for k, v in sd.items() if not k.startswith(_TRAINING_ONLY)}
    cfg = vavae_config(sd)
    net = cfg["net"]
    levels, blocks, attn = len(net["ch_mult"]), net["num_res_blocks"], net["attn_levels"]
    out = {**convnet_keys(sd, "encoder", levels, blocks, attn), **convnet_keys(sd, "decoder", levels, blocks, attn)}
    for name in ("quant_conv", "post_quant_conv"):
        for part in ("weight", "bias"):
            out[f"{name}.{part}"] = need(sd, f"{name}.{part}", WHAT)
    stray = sorted(set(sd) - _ldm_keys_used(sd, out))
    if stray:
        raise CheckpointError(f"not a {WHAT} checkpoint: unexpected tensor {stray[0]!r}")
    return cfg, out


def _ldm_keys_used(sd: dict[str, Tensor], out: dict[str, Tensor]) -> set[str]:
    """The keys of ``sd`` the mapping read (by identity of the tensors it copied)."""
    taken = {id(v) for v in out.values()}
    return {k for k, v in sd.items() if id(v) in taken}


def read_stats(path: Path | str, channels: int) -> tuple[Tensor, Tensor]:
    """(mean, std), each (C,), of LightningDiT's ``latents_stats.pt`` ({"mean", "std"} of shape (1, C, 1, 1))."""
    obj = load_state_dict(path)
    mean, std = need(obj, "mean", "latents_stats"), need(obj, "std", "latents_stats")
    if mean.numel() != channels or std.numel() != channels:
        raise CheckpointError(f"{path}: latent stats for {mean.numel()} channels; the VA-VAE has {channels}")
    mean, std = mean.float().flatten(), std.float().flatten()
    finite({"mean": mean, "std": std}, str(path))
    if (std <= 0).any():
        raise CheckpointError(f"{path}: latent std must be positive")
    return mean, std


def import_vavae(path: Path | str, out: Path | str, *, stats: str | None, raw: bool = False,
                 resolution: int = 256, multiplier: float = 1.0) -> Path:  # fmt: skip
    """Write the tokenizer run of a VA-VAE checkpoint (``stats``: its ``latents_stats.pt``) to ``out``."""
    if not stats and not raw:
        raise CheckpointError("a VA-VAE's latents are normalised by LightningDiT's latents_stats.pt: give it with "
                              "--stats (or --raw for unnormalised latents)")  # fmt: skip
    if multiplier <= 0:
        raise CheckpointError(f"--latent-multiplier must be positive, got {multiplier}")
    with converting(WHAT, path):
        cfg, state = convert_vavae(load_checkpoint(path))  # a Lightning {"state_dict": ...} or the dict itself
        finite(state, str(path))
    config = load_preset_dict("imagenet256/vavae-f16d32")
    cfg = {**config["tokenizer"], **cfg, "sample_posterior": True, "normalize": "none" if raw else "channel"}
    comp = component_from_dict("tokenizer", cfg, "tokenizer")
    state = fill_and_check(comp.build(resolution=resolution), state, WHAT, ("latent_mean", "latent_std",
                                                                            "latent_stats_fitted"))  # fmt: skip
    if not raw:  # LightningDiT: (z - mean) / std * multiplier, i.e. genlab's std is std / multiplier
        mean, std = read_stats(stats, comp.cfg.embed_dim)
        state = {
            **state,
            "latent_mean": mean,
            "latent_std": std / multiplier,
            "latent_stats_fitted": torch.tensor(True),
        }
    config["tokenizer"], config["data"]["resolution"] = to_dict(comp), resolution
    config["preset"] = f"imported from {Path(path).name}"
    return write_tokenizer_run(Path(out), config, to_dict(comp), state)


@register("importer", "va-vae")
class VAVAEImporter:
    help = "LightningDiT's VA-VAE (vavae-imagenet256-f16d32-dinov2.pt) with its latents_stats.pt as a tokenizer run"

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--stats", help="LightningDiT's latents_stats.pt (channel mean and std of the latents)")
        parser.add_argument("--raw", action="store_true", help="no latent statistics: latents as the encoder gives")
        parser.add_argument("--latent-multiplier", type=float, default=1.0, help="LightningDiT's (VA-VAE: 1.0)")
        parser.add_argument("--resolution", type=int, default=256, help="the image size the run encodes (256)")

    @staticmethod
    def run(path: Path, out: Path, args: argparse.Namespace) -> Path:
        return import_vavae(path, out, stats=args.stats, raw=args.raw, resolution=args.resolution,
                            multiplier=args.latent_multiplier)  # fmt: skip
