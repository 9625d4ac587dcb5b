"""Task ``tokenizer``: a tokenizer trained on its own (reconstruction, perceptual, quantizer, GAN terms).

Reconstruction grids are written while training; at the end the tokenizer's weights and ``recon.json``
(``genlab.evals.recon.reconstruction_metrics`` on the first 512 images, the same PSNR/SSIM as ``genlab eval
--tokenizer``). A continuous tokenizer with latent statistics (KL-VAE, VA-VAE) has them fitted on its first
``tokenizer.stats_images`` training images before its weights are written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor, nn

from genlab.config import RunConfig
from genlab.evals.recon import reconstruction_metrics
from genlab.grids import save_grid
from genlab.registry import register
from genlab.runs.limits import check_build
from genlab.runs.store import RunFolder, save_tokenizer
from genlab.tasks.base import first_images, fit, init_from, not_sampleable, training_data
from genlab.tokenizers.base import Tokenizer
from genlab.train import Hooks


class TokenizerTraining(nn.Module):
    """Trains a tokenizer itself: its ``loss(batch, step, losses)`` with the modules ``training_losses()`` builds.

    A discriminator among those modules is exposed as ``discriminator``, which gives it its own optimizer in the
    trainer; ``set_step`` tells the losses the optimizer step (delayed GAN start).
    """

    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.losses = tokenizer.training_losses()
        self.step = 0
        keys = ["rec"] if tokenizer.token_spec.kind == "continuous" else ["rec", "usage", "perplexity"]
        if self.losses is not None and getattr(self.losses, "perceptual", None) is not None:
            keys.append("perceptual")
        if self.discriminator is not None:
            keys += ["gan", "disc"]
        keys += [k for k in tokenizer.LOG_KEYS if k not in keys]
        self.log_keys = tuple(keys)
        self.bar_keys = () if tokenizer.token_spec.kind == "continuous" else ("usage", "perplexity")
        self.warned = False

    def on_log(self, step: int, logged: dict[str, float]) -> None:
        """Warn (once) when a discrete tokenizer uses less than 5% of its codebook: it is collapsing."""
        usage = logged.get("usage")
        if usage is not None and 0 < usage < USAGE_WARNING and not self.warned:
            self.warned = True
            print(f"\nwarning: step {step}: codebook usage {100 * usage:.1f}% < {100 * USAGE_WARNING:.0f}% (collapse); "
                  "re-seed dead codes (quantizer.dead_code_threshold), use l2_norm or a smaller code_dim, or FSQ",
                  file=sys.stderr)  # fmt: skip

    @property
    def discriminator(self) -> nn.Module | None:
        return getattr(self.losses, "discriminator", None)

    def set_step(self, step: int) -> None:
        self.step = step

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.tokenizer.loss(batch, self.step, self.losses)
        zero = out["loss"].new_zeros(())
        return {**{k: zero for k in self.log_keys}, **out}  # e.g. "gan" is 0 before the GAN term starts


def fit_latent_stats(tokenizer, dataset, n: int, batch_size: int = 64) -> None:
    """Fit a continuous tokenizer's latent mean/std on the first ``n`` training images (no flips)."""
    n = min(n, len(dataset))
    device = next(tokenizer.parameters()).device
    batches = (first_images(dataset, min(batch_size, n - s), s).to(device) for s in range(0, n, batch_size))
    tokenizer.fit_latent_stats(batches, progress=n > 4 * batch_size, total=-(-n // batch_size))
    print(f"latent statistics fitted on {n} images: mean {tokenizer.latent_mean.tolist()}, std "
          f"{tokenizer.latent_std.tolist()}")  # fmt: skip


USAGE_WARNING = 0.05  # a discrete tokenizer using less of its codebook than this is collapsing


def tokenizer_hooks(cfg, dataset) -> Hooks:
    """Reconstruction grids while training; at the end the weights (latent statistics fitted first) and recon.json."""
    shown = first_images(dataset, cfg.sample.per_class)

    def sample(m: TokenizerTraining, step: int, run_dir: Path) -> None:
        tok = m.tokenizer.eval()
        with torch.no_grad():
            recon = tok.roundtrip(shown.to(next(tok.parameters()).device)).clamp(-1, 1).cpu()
        path = run_dir / "samples" / f"step_{step:07d}.png"
        save_grid(torch.cat([shown, recon]), path, nrow=len(shown), row_labels=["input", "reconstruction"])
        tok.train()

    def export(m: TokenizerTraining, run_dir: Path) -> None:
        tok = m.tokenizer.eval()
        if hasattr(tok, "fit_latent_stats"):
            fit_latent_stats(tok, dataset, tok.cfg.stats_images)
        save_tokenizer(cfg, tok, run_dir, dataset.class_names)
        metrics = reconstruction_metrics(tok, first_images(dataset, 512))
        tok.train()
        RunFolder(run_dir).write_recon(metrics)
        print("reconstruction:", json.dumps(metrics))

    return Hooks(sample=sample, export=export)


@register("task", "tokenizer")
class TokenizerRun:
    Config = RunConfig

    @staticmethod
    def train(cfg: RunConfig, out: Path, *, resume: str | None = None) -> Path:
        dataset = training_data(cfg)
        check_build(lambda: cfg.tokenizer.build(resolution=cfg.data.cfg.resolution), "tokenizer")  # on meta first
        tokenizer = cfg.tokenizer.build(resolution=cfg.data.cfg.resolution)
        init_from(cfg.train, {"tokenizer": tokenizer})
        model = TokenizerTraining(tokenizer)
        return fit(cfg.train, model, dataset, out, tokenizer_hooks(cfg, dataset), cfg.to_dict(), resume)

    @staticmethod
    def load(run: RunFolder, *, device=None) -> NoReturn:
        raise not_sampleable(run, "tokenizer")
