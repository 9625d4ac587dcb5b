"""Stable Diffusion's VAE (diffusers ``AutoencoderKL``) as a frozen continuous tokenizer, as DiT uses it.

Weights are the user's to provide (e.g. ``stabilityai/sd-vae-ft-ema`` downloaded once): a diffusers
folder given as ``tokenizer.path``, or a hub id already in the local Hugging Face cache. Nothing is
downloaded. Tokens are z' = (z - shift_factor) * scaling_factor (diffusers' convention; SD 1/2: 0.18215 and no
shift, SDXL 0.13025, FLUX-style VAEs a shift too), both read from the folder's config unless the run config sets
them, so generators see unit-variance tokens whatever VAE they sit on.

A run made by ``genlab import sd-vae`` (or ``dit`` with ``--vae``) is self-contained: ``vae_config`` holds the
folder's AutoencoderKL config and the run's ``tokenizer/model.safetensors`` its weights, so the folder is no
longer needed. On the meta device (``genlab info``) the architecture is the one really built: ``vae_config``, else
the folder's ``config.json``, else SD's f8 VAE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genlab.registry import register
from genlab.tokenizers.base import Tokenizer, TokenizerError, TokenSpec

# The architecture of SD's f8 VAE (sd-vae-ft-ema / -mse): used to count parameters without weights.
SD_VAE_ARCH = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)


@register("tokenizer", "sd-vae")
class SDVAETokenizer(Tokenizer):
    trainable = False

    @dataclass
    class Config:
        path: str = ""  # diffusers AutoencoderKL folder, or a hub id present in the local HF cache
        vae_config: dict[str, Any] = field(default_factory=dict)  # the AutoencoderKL config (self-contained runs)
        scaling_factor: float = 0.0  # z' = (z - shift) * scale; 0: the folder's config.scaling_factor (SD: 0.18215)
        shift_factor: float | None = None  # None: the folder's config.shift_factor (absent or null: 0)
        sample_posterior: bool = False  # encode with a posterior sample instead of its mean

        def validate(self) -> None:
            if not self.scaling_factor >= 0:
                raise ValueError(f"scaling_factor must be >= 0 (0: the VAE folder's), got {self.scaling_factor}")

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg)
        self.vae.requires_grad_(False)
        vc = self.vae.config
        self.scaling_factor = cfg.scaling_factor or float(getattr(vc, "scaling_factor", None) or 0.18215)
        folder_shift = getattr(vc, "shift_factor", None)
        self.shift_factor = float(cfg.shift_factor if cfg.shift_factor is not None else folder_shift or 0.0)
        channels = vc.latent_channels
        factor = 2 ** (len(vc.block_out_channels) - 1)  # SD's VAE: 8
        if resolution % factor:
            raise TokenizerError(f"this VAE downsamples by {factor}; resolution {resolution} is not a multiple of it")
        self.token_spec = TokenSpec("continuous", (channels, resolution // factor, resolution // factor))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        dist = self.vae.encode(images).latent_dist
        z = dist.sample() if self.cfg.sample_posterior else dist.mean
        return (z - self.shift_factor) * self.scaling_factor

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        return self.vae.decode(tokens / self.scaling_factor + self.shift_factor).sample


def build_vae(cfg: SDVAETokenizer.Config):
    """The AutoencoderKL: from ``vae_config`` (random weights: the run loads its own), on the meta device from the
    architecture really described, else loaded from ``path``."""
    from diffusers import AutoencoderKL

    if cfg.vae_config:
        try:
            return AutoencoderKL.from_config(dict(cfg.vae_config))
        except (TypeError, ValueError) as e:
            raise TokenizerError(f"tokenizer.vae_config is not an AutoencoderKL config: {e}") from None
    on_meta = torch.empty(0).device.type == "meta"
    if on_meta:
        folder = Path(cfg.path) / "config.json" if cfg.path else None
        if folder is not None and folder.is_file():
            return AutoencoderKL.from_config(json.loads(folder.read_text()))  # count what is really built
        return AutoencoderKL(**SD_VAE_ARCH)  # shapes only, for counting parameters
    if not cfg.path:
        raise TokenizerError(
            "the sd-vae tokenizer needs weights: set tokenizer.path to a diffusers AutoencoderKL folder "
            "(e.g. stabilityai/sd-vae-ft-ema, downloaded once with `huggingface-cli download`)"
        )
    try:
        return AutoencoderKL.from_pretrained(cfg.path, local_files_only=True)
    except (OSError, ValueError) as e:
        where = "folder" if Path(cfg.path).exists() else "folder or cached hub id"
        raise TokenizerError(f"cannot load an AutoencoderKL from {where} {cfg.path!r}: {e}") from None
