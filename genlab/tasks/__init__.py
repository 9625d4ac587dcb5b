"""Tasks: what a run trains, one registered kind ("task") and one file each.

- ``generator``: a generator on the tokens of a frozen tokenizer (``generator.py``);
- ``tokenizer``: a tokenizer itself (``tokenizer.py``);
- ``titok``: TiTok's two-stage recipe, stage 1 against a frozen teacher tokenizer run's codes (``titok.py``);
- ``flowturbo-refiner``: a network trained against a frozen generator run (``refiner.py``: FlowTurbo's velocity
  refiner; the template for reflow, CTM and other distillation).

A task is a class with a ``Config`` (the run config's schema, ``from_dict``/``to_dict``),
``train(cfg, out_dir, resume=None) -> Path`` and ``load(run, device) -> Pipeline`` (``genlab.tasks.base.Task``).
A run config names its task with ``task:`` (default generator); any registered task will do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from genlab import registry
from genlab.tasks import ctm, generator, refiner, reflow, titok, tokenizer  # noqa: F401  (register the built-ins)
from genlab.train import runfolder_guard


def train_run(cfg: Any, out_dir: Path | str, *, resume: str | None = None, overwrite: bool = False) -> Path:
    """Train ``cfg`` (any task's config) into ``out_dir``: checkpoints, samples, metrics, exported weights.

    The run-folder guard runs here, once, before the task builds anything: against the config.yaml the task will
    write (its ``record(cfg)``, else ``cfg.to_dict()``); ``overwrite`` first deletes the run already in ``out_dir``."""
    task = registry.get("task", getattr(cfg, "task", "generator"))
    out = Path(out_dir)
    record = task.record(cfg) if hasattr(task, "record") else cfg.to_dict()
    runfolder_guard.check_run_folder(out, record, resume=resume, overwrite=overwrite)
    if overwrite and (removed := runfolder_guard.clear_run_outputs(out)):
        print(f"--overwrite: deleted {', '.join(removed)} of the run in {out}", file=sys.stderr)
    return task.train(cfg, out, resume=resume)


__all__ = ["train_run"]
