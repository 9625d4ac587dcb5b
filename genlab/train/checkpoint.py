"""Atomic checkpoints on top of accelerate's ``save_state``.

A checkpoint is written to ``checkpoints/.tmp-step_XXXXXXX``, completed with ``trainer_state.json``
(written last, flushed and fsynced), then renamed to ``checkpoints/step_XXXXXXX``. A directory
without that file is never taken as valid, so a crash mid-save cannot leave a checkpoint that looks
good but is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{7})$")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def valid_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every complete checkpoint under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file():
            try:
                state = json.loads((d / STATE_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if state.get("step") == int(m.group(1)):
                found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = valid_checkpoints(root)
    return found[-1][1] if found else None


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / f".tmp-step_{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, tmp: Path, step: int, state: dict, keep: int) -> Path:
    """Mark ``tmp`` complete, move it into place, and prune to the newest ``keep`` checkpoints."""
    write_json_atomic(tmp / STATE_FILE, {**state, "step": step})
    final = step_dir(root, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if keep > 0:
        for _, old in valid_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final
