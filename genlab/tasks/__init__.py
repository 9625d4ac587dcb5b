"""Tasks: what a run trains, one registered kind ("task") and one file each.

- ``generator``: a generator on the tokens of a frozen tokenizer (``generator.py``);
- ``tokenizer``: a tokenizer itself (``tokenizer.py``);
- ``flowturbo-refiner``: a network trained against a frozen generator run (``refiner.py``: FlowTurbo's velocity
  refiner; the template for reflow, CTM and other distillation).

A task is a class with a ``Config`` (the run config's schema, ``from_dict``/``to_dict``) and
``train(cfg, out_dir, resume=None) -> Path``. A run config names its task with ``task:`` (default generator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genlab import registry
from genlab.tasks import ctm, generator, refiner, reflow, tokenizer  # noqa: F401  (register the built-ins)


def train_run(cfg: Any, out_dir: Path | str, *, resume: str | None = None) -> Path:
    """Train ``cfg`` (any task's config) into ``out_dir``: checkpoints, samples, metrics, exported weights."""
    task = getattr(cfg, "task", "generator")
    return registry.get("task", task).train(cfg, Path(out_dir), resume=resume)


__all__ = ["train_run"]
