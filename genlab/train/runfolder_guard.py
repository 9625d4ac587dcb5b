"""One run per folder: a new config is checked against the run already in ``--out`` before anything is written.

- a fresh folder (missing, empty, or holding none of genlab's outputs) trains;
- ``--resume`` continues the run in the folder; its config may differ only in how long and how often things happen
  (``RESUMABLE``) and in the preview-sampling section; anything else (``generator.depth=3``) is refused, so a failed
  resume never rewrites ``config.yaml`` of a finished run;
- without ``--resume``, a folder that holds checkpoints or another config is refused unless ``--overwrite``, which
  deletes the old run's checkpoints and outputs first: only the names the folder's run manifest
  (``genlab_run.json``) lists as genlab's, never a file of the user's; a folder without a manifest is refused.

``config.yaml`` is written (``RunFolder.write_config``) only once a resume has loaded: ``Trainer.fit(on_start=...)``.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from typing import Any

from genlab.runs.store import COMPONENTS, MANIFEST, OWN, RunFolder
from genlab.train import checkpoint
from genlab.train.trainer import TrainError

# what a resume may change: the length of the run and the cadence of logs, samples and checkpoints, and how the
# weights are placed over the processes (FSDP's checkpoints hold the full tensors of any other run)
RESUMABLE = frozenset(
    f"train.{k}"
    for k in (
        "steps",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_workers",
        "tensorboard",
        "fsdp",
        "fsdp_wrap",
    )
)
IGNORED = ("preset", "sample")  # informational, and the periodic preview grids' settings
OUTPUTS = (
    "config.yaml", "checkpoints", "generator", "tokenizer", "refiner", "samples", "tensorboard", "metrics.jsonl",
    "class_names.json", "recon.json",
)  # fmt: skip


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: data}


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (sample.* and preset ignored)."""
    a, b = _flat(old), _flat(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in IGNORED:
            continue
        va, vb = a.get(key, "(absent)"), b.get(key, "(absent)")
        if va == "(absent)" and vb in ("", None):  # a key added since the old run was written, left empty
            continue
        if isinstance(va, tuple) or isinstance(vb, tuple):
            va, vb = list(va) if isinstance(va, tuple) else va, list(vb) if isinstance(vb, tuple) else vb
        if va != vb:
            out.append(f"{key}: {va} -> {vb}")
    return out


def read_run_config(out: Path) -> dict:
    try:
        return RunFolder(out).read_config_dict()  # a RunError naming the file when it is not a readable mapping
    except UnicodeDecodeError:
        raise TrainError(f"{out / 'config.yaml'} is not text; choose another --out or pass --overwrite") from None


def check_run_folder(out: Path | str, config_data: dict, *, resume: str | None, overwrite: bool = False) -> None:
    """Raise ``TrainError`` (one line, what to do) if training ``config_data`` into ``out`` would mix two runs.

    Reads only; ``overwrite`` accepts any folder (``clear_run_outputs`` then makes room)."""
    out = Path(out)
    if resume and overwrite:
        raise TrainError("--resume continues the run in --out and --overwrite deletes it: give one of them")
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is a file, not a run directory")
    if overwrite or not out.is_dir():
        return
    held = genlab_names(out)
    if not held:
        return
    if not (out / "config.yaml").is_file():
        if resume:  # checkpoints copied without their config: the checkpoint's loaders check every shape
            return
        raise TrainError(
            f"{out} holds {', '.join(held)} but no config.yaml, so it is no run genlab can continue; "
            "choose another --out, or pass --overwrite to delete them"
        )
    diffs = differences(read_run_config(out), config_data)
    if resume:
        blocking = [d for d in diffs if d.split(":")[0] not in RESUMABLE]
        if blocking:
            raise TrainError(
                f"--resume: the config differs from {out / 'config.yaml'} in {_few(blocking)}; resume with the run's "
                f"own config (a resume may change only {', '.join(sorted(RESUMABLE))} and sample.*), or start over "
                "with --overwrite"
            )
        return
    steps = [int(p.name[5:]) for p in checkpoint.step_folders(out / "checkpoints")]
    if steps or diffs:
        what = f"checkpoints up to step {max(steps)}" if steps else f"another config ({_few(diffs)})"
        raise TrainError(
            f"{out} already holds a run ({what}); continue it with --resume auto, choose another --out, or pass "
            "--overwrite to delete it and start over"
        )


def genlab_names(out: Path) -> list[str]:
    """The top-level names in ``out`` holding something by a name genlab writes (``OWN``): a ``generator/`` folder
    holding only a user's notes is not a run."""
    found = []
    for name in OUTPUTS:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            if any(_owned(c.relative_to(out).as_posix(), OWN) for c in p.iterdir()):
                found.append(name)
        elif (p.exists() or p.is_symlink()) and _owned(name, OWN):
            found.append(name)
    return found


def _owned(rel: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns)


def clear_run_outputs(out: Path | str) -> list[str]:
    """Delete what genlab wrote into ``out``: only the names its run manifest (``genlab_run.json``) lists as
    genlab's; a user's file beside them (also inside ``generator/`` or ``samples/``) stays. Refused (``TrainError``,
    nothing deleted) when ``out`` holds any of genlab's names but no manifest: a folder genlab did not make, or a
    run of a genlab older than the manifest. Returns the top-level names something was removed from."""
    out = Path(out)
    if not out.is_dir():
        return []
    run = RunFolder(out)
    own = run.owned()
    if own is None:
        held = genlab_names(out)
        if not held:
            return []
        raise TrainError(
            f"--overwrite: {out} holds {', '.join(held)} but no genlab run manifest ({MANIFEST}), so genlab does not "
            "know them as its own and deletes nothing; choose another --out, or delete them yourself"
        )
    removed: dict[str, None] = {}
    for path in sorted(out.rglob("*"), key=lambda p: len(p.parts)):
        rel = path.relative_to(out).as_posix()
        if path.exists() or path.is_symlink():
            if _owned(rel, own):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed[rel.split("/")[0]] = None
    for name in ("checkpoints", "samples", "tensorboard", *COMPONENTS):  # folders left empty by the removal
        if name in removed and (out / name).is_dir() and not any((out / name).iterdir()):
            (out / name).rmdir()
    (out / MANIFEST).unlink(missing_ok=True)  # nothing of genlab's is left; the next run writes its own
    return [n for n in OUTPUTS if n in removed] + [n for n in removed if n not in OUTPUTS]


def _few(items: list[str], n: int = 3) -> str:
    return "; ".join(items[:n]) + (f"; and {len(items) - n} more" if len(items) > n else "")
