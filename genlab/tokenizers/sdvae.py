"""Stable Diffusion's VAE (diffusers ``AutoencoderKL``) as a frozen continuous tokenizer, as DiT uses it.

Weights are the user's to provide (e.g. ``stabilityai/sd-vae-ft-ema`` downloaded once): a diffusers
folder given as ``tokenizer.path``, or a hub id already in the local Hugging Face cache. Nothing is
downloaded. Latents are multiplied by ``scaling_factor`` on encode and divided on decode, so
generators see unit-variance tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
        scaling_factor: float = 0.18215  # SD's latent scale (DiT: 0.18215)
        sample_posterior: bool = False  # encode with a posterior sample instead of its mean

    def __init__(self, cfg: Config, *, resolution: int):
        super().__init__()
        from diffusers import AutoencoderKL

        self.cfg = cfg
        on_meta = torch.empty(0).device.type == "meta"
        if on_meta:
            self.vae = AutoencoderKL(**SD_VAE_ARCH)  # shapes only, for counting parameters
        elif not cfg.path:
            raise TokenizerError(
                "the sd-vae tokenizer needs weights: set tokenizer.path to a diffusers AutoencoderKL folder "
                "(e.g. stabilityai/sd-vae-ft-ema, downloaded once with `huggingface-cli download`)"
            )
        else:
            try:
                self.vae = AutoencoderKL.from_pretrained(cfg.path, local_files_only=True)
            except (OSError, ValueError) as e:
                where = "folder" if Path(cfg.path).exists() else "folder or cached hub id"
                raise TokenizerError(f"cannot load an AutoencoderKL from {where} {cfg.path!r}: {e}") from None
        self.vae.requires_grad_(False)
        channels = self.vae.config.latent_channels
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)  # SD's VAE: 8
        if resolution % factor:
            raise TokenizerError(f"this VAE downsamples by {factor}; resolution {resolution} is not a multiple of it")
        self.token_spec = TokenSpec("continuous", (channels, resolution // factor, resolution // factor))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        dist = self.vae.encode(images).latent_dist
        z = dist.sample() if self.cfg.sample_posterior else dist.mean
        return z * self.cfg.scaling_factor

    @torch.no_grad()
    def decode(self, tokens: Tensor, seeds: Tensor | None = None) -> Tensor:
        return self.vae.decode(tokens / self.cfg.scaling_factor).sample
