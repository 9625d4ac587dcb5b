"""Trainable tasks: what the generic trainer's ``forward(batch) -> dict`` means for each kind of run."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.tokenizers.base import Tokenizer


class GeneratorTask(nn.Module):
    """Trains an objective (wrapping a backbone) on the tokens of a frozen tokenizer: encoded on the fly from
    ``batch["image"]``, or read from a token cache as ``batch["tokens"]``."""

    def __init__(self, tokenizer: Tokenizer, objective: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.objective = objective

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tokens = batch.get("tokens")
        if tokens is None:
            with torch.no_grad():
                tokens = self.tokenizer.encode(batch["image"])
        return self.objective(tokens, batch["label"], batch["seed"])


class TokenizerTask(nn.Module):
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

    @property
    def discriminator(self) -> nn.Module | None:
        return getattr(self.losses, "discriminator", None)

    def set_step(self, step: int) -> None:
        self.step = step

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.tokenizer.loss(batch, self.step, self.losses)
        zero = out["loss"].new_zeros(())
        return {**{k: zero for k in self.log_keys}, **out}  # e.g. "gan" is 0 before the GAN term starts
