"""The trainer (accelerate), its checkpoints and its data plan."""

from genlab.train.trainer import Hooks, Trainer, TrainError

__all__ = ["Hooks", "TrainError", "Trainer"]
