"""Atomic, self-checking checkpoints.

A checkpoint is written to ``checkpoints/.tmp-step_XXXXXXX``, completed with ``trainer_state.json`` (written last,
flushed and fsynced; it records every file's size and sha256), then renamed to ``checkpoints/step_XXXXXXX``. A
directory without that file is never taken as valid, so a crash mid-save cannot leave a checkpoint that looks good
but is not; a file changed afterwards (bit rot, a truncated copy, a crafted file) fails ``verify`` and resume falls
back to the previous checkpoint. Old checkpoints are pruned by renaming them out of the ``step_*`` namespace first,
so a kill while pruning never leaves a ``step_*`` folder that is half deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from genlab.safeio import CorruptFileError, fsync_dir, read_json_checked, sha256_file

STATE_FILE = "trainer_state.json"
FORMAT = 2  # 1: accelerate's save_state (pickles; no longer loaded); 2: safetensors + JSON with a file manifest
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
    """(step, dir) of every complete checkpoint under ``root`` (its state file names its step), oldest first.

    Complete is not verified: ``verify`` also checks every file against the recorded sizes and checksums."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and d.is_dir() and (d / STATE_FILE).is_file():
            try:
                state = json.loads((d / STATE_FILE).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue
            if isinstance(state, dict) and state.get("step") == int(m.group(1)):
                found.append((int(m.group(1)), d))
    return sorted(found)


def step_folders(root: Path) -> list[Path]:
    """Every ``step_XXXXXXX`` folder under ``root``, complete or not, oldest first."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if _NAME.match(d.name) and d.is_dir())


def latest_checkpoint(root: Path) -> Path | None:
    found = valid_checkpoints(root)
    return found[-1][1] if found else None


def manifest(folder: Path) -> dict[str, dict]:
    """{file name: {"size", "sha256"}} of every regular file in ``folder`` except the state file."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name != STATE_FILE and not f.name.startswith(".") and f.is_file():
            out[f.name] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
    return out


def verify(folder: Path) -> dict:
    """The state of a checkpoint whose every recorded file is present, of its recorded size and checksum; else
    ``CorruptFileError`` saying which file is wrong. Checkpoints without a manifest (written by accelerate's
    ``save_state``, whose files are pickles) are refused."""
    state = read_json_checked(folder / STATE_FILE)
    if state.get("format") != FORMAT or not isinstance(state.get("files"), dict):
        raise CorruptFileError(
            f"{folder}: written by an older genlab (accelerate pickles, which genlab no longer loads) or not a "
            "genlab checkpoint; start the run again, or resume with the genlab version that wrote it"
        )
    if not isinstance(state.get("step"), int) or isinstance(state["step"], bool) or state["step"] < 0:
        raise CorruptFileError(f"{folder / STATE_FILE}: no valid step")
    for name, rec in state["files"].items():
        f = folder / name
        if not isinstance(name, str) or "/" in name or name.startswith(".") or not isinstance(rec, dict):
            raise CorruptFileError(f"{folder / STATE_FILE}: a bad file entry {name!r}")
        if not f.is_file():
            raise CorruptFileError(f"{f}: missing (or not a regular file)")
        if f.stat().st_size != rec.get("size"):
            raise CorruptFileError(f"{f}: {f.stat().st_size} bytes, {rec.get('size')} were written (truncated?)")
        if sha256_file(f) != rec.get("sha256"):
            raise CorruptFileError(f"{f}: its checksum differs from the one recorded when it was written")
    return state


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / f".tmp-step_{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(root: Path, tmp: Path, step: int, state: dict, keep: int) -> Path:
    """Record ``tmp``'s files, mark it complete, move it into place, and prune to the newest ``keep`` checkpoints."""
    write_json_atomic(tmp / STATE_FILE, {**state, "step": step, "format": FORMAT, "files": manifest(tmp)})
    final = step_dir(root, step)
    if final.exists():
        _discard(root, final)
    os.replace(tmp, final)
    fsync_dir(root)
    if keep > 0:
        for _, old in valid_checkpoints(root)[:-keep]:
            _discard(root, old)
    clean(root)
    return final


def clean(root: Path) -> None:
    """Remove what an interrupted save or prune left: ``.tmp-*`` folders and ``step_*`` folders without a state file
    (a prune by an older genlab deleted files one by one)."""
    for d in list(root.iterdir()):
        stale = d.name.startswith((".tmp-step_", ".old-step_"))
        empty = _NAME.match(d.name) and d.is_dir() and not (d / STATE_FILE).exists()
        if (stale or empty) and d.is_dir() and not d.is_symlink():
            shutil.rmtree(d, ignore_errors=True)


def _discard(root: Path, folder: Path) -> None:
    """Delete a checkpoint folder: first renamed (atomic) out of the ``step_*`` names, then removed."""
    gone = root / f".old-{folder.name}"
    if gone.exists():
        shutil.rmtree(gone, ignore_errors=True)
    os.replace(folder, gone)
    shutil.rmtree(gone, ignore_errors=True)
