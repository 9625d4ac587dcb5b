"""The trainer (accelerate), its checkpoints and its data plan."""

from genlab.train.tasks import GeneratorTask, TokenizerTask
from genlab.train.trainer import Hooks, Trainer, TrainError

__all__ = ["GeneratorTask", "Hooks", "TokenizerTask", "TrainError", "Trainer"]
