"""Trainable tasks: what the generic trainer's ``forward(batch) -> dict`` means for each kind of run."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.tokenizers.base import Tokenizer


class GeneratorTask(nn.Module):
    """Trains an objective (wrapping a backbone) on the tokens of a frozen tokenizer."""

    def __init__(self, tokenizer: Tokenizer, objective: nn.Module):
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.objective = objective

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.no_grad():
            tokens = self.tokenizer.encode(batch["image"])
        return self.objective(tokens, batch["label"], batch["seed"])
