"""Reading files that someone else may have made: nothing is unpickled, every bad file is one line.

A run folder, a checkpoint or a token cache handed to genlab is data, never code: tensors come from safetensors,
everything else from JSON or YAML's safe loader. A file that cannot be read as expected raises ``CorruptFileError``
naming the file and what is wrong with it (the CLI prints it as one line, exit status 2).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SAFETENSORS_MAX_HEADER = 100_000_000  # the limit the safetensors format itself sets on its JSON header


class CorruptFileError(ValueError):
    """A file that is missing, truncated, crafted or of another format; the message names it."""


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked against the file's size before anything else reads it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFileError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
            n = int.from_bytes(head, "little")
            if n > min(SAFETENSORS_MAX_HEADER, size - 8):
                raise CorruptFileError(f"{path}: not a safetensors file (header length {n} but {size} bytes)")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptFileError(f"{path}: not a safetensors file (its header is not JSON)") from None
    except OSError as e:
        raise CorruptFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"{path}: not a safetensors file (its header is not a mapping)")
    data = size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CorruptFileError(f"{path}: tensor {key!r} has no valid data offsets")
        if not 0 <= offsets[0] <= offsets[1] <= data:
            raise CorruptFileError(f"{path}: tensor {key!r} lies outside the file (truncated?)")
    return header


def load_safetensors_checked(
    path: Path | str,
    expected_keys: Iterable[str] | None = None,
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    *,
    device: str = "cpu",
    finite: bool = True,
) -> dict[str, Tensor]:
    """The tensors of a safetensors file, or ``CorruptFileError`` naming the file: a bad or truncated header, keys
    other than ``expected_keys`` (when given: missing and unexpected ones are listed), shapes other than
    ``expected_shapes`` (when given, for the keys it names), a floating tensor holding NaN or infinity (the first
    one in key order is named; ``finite=False`` skips this check)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: missing (or not a regular file)")
    safetensors_header(path)
    try:
        tensors = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptFileError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    if expected_keys is not None:
        want = set(expected_keys)
        missing, extra = sorted(want - set(tensors)), sorted(set(tensors) - want)
        if missing or extra:
            parts = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(extra)}" if extra else ""]
            raise CorruptFileError(
                f"{path}: holds other tensors than expected ({'; '.join(p for p in parts if p)}); "
                "was it written for another model or config?"
            )
    for key, shape in (expected_shapes or {}).items():
        if key in tensors and tuple(tensors[key].shape) != tuple(shape):
            raise CorruptFileError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, expected {tuple(shape)}; "
                "was it written for another model or config?"
            )
    if finite:
        bad = first_non_finite(tensors)
        if bad is not None:
            raise CorruptFileError(f"{path}: tensor {bad!r} holds NaN or infinite values")
    return tensors


def first_non_finite(tensors: Mapping[str, Tensor]) -> str | None:
    """The first key (sorted) whose floating tensor holds NaN or +-inf, or None."""
    for key in sorted(tensors):
        t = tensors[key]
        if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
            return key
    return None


def safetensors_metadata(path: Path | str) -> dict[str, str]:
    """The ``__metadata__`` (str -> str) of a safetensors file, checked like its tensors."""
    meta = safetensors_header(Path(path)).get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CorruptFileError(f"{path}: its safetensors metadata is not a str -> str mapping")
    return meta


def load_state_dict_checked(module: torch.nn.Module, path: Path | str, *, what: str = "weights") -> None:
    """``module.load_state_dict`` from a safetensors file whose keys and shapes must match the module's."""
    own = module.state_dict()
    tensors = load_safetensors_checked(path, own.keys(), {k: tuple(v.shape) for k, v in own.items()})
    module.load_state_dict(tensors)


def read_json_checked(path: Path | str, kind: type = dict) -> Any:
    """A JSON file holding a ``kind`` (dict or list), or ``CorruptFileError`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptFileError(f"{path}: not a readable JSON file ({type(e).__name__})") from None
    if not isinstance(data, kind):
        raise CorruptFileError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def require_finite(name: str, value: float, *, low: float | None = None, high: float | None = None) -> float:
    """``value`` if it is a finite number within [low, high]; else ValueError naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ValueError(f"{name} must be >= {low:g}, got {value}")
        if low is None:
            raise ValueError(f"{name} must be <= {high:g}, got {value}")
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value}")
    return value


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


# ----------------------------------------------------------------------------- one line per error


_OUTPUT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR,
                  errno.EEXIST, errno.ENOENT, errno.ENAMETOOLONG, errno.EFBIG, errno.ELOOP}  # fmt: skip


def one_line(e: BaseException) -> str:
    """The message of a user error as one line. A DataLoader worker's error arrives as "Caught X in DataLoader worker
    process N. Original Traceback ...": only its last line, the original message, is kept."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = (
            last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].replace(".", "").isidentifier() else last
        )
        text = f"{text} (in a DataLoader worker)"
    return " ".join(text.split("\n")) if "\n" in text else text


def file_error_line(e: BaseException, where: str | None = None) -> str | None:
    """One line for an error that a bad file or path caused (a corrupt or foreign file, an unwritable, full or
    misplaced output); None for anything else, which stays a traceback (a bug)."""
    from safetensors import SafetensorError

    try:
        import yaml

        yaml_error: tuple = (yaml.YAMLError,)
    except ImportError:  # pragma: no cover
        yaml_error = ()
    inside = f" in {where}" if where else ""
    if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS and e.filename:
        return f"{e.filename}: {e.strerror}"
    if isinstance(e, (UnicodeDecodeError, json.JSONDecodeError, SafetensorError, *yaml_error)):
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"a file{inside} is corrupt or not one genlab wrote ({type(e).__name__}: {first})"
    if isinstance(e, RuntimeError) and "Error(s) in loading state_dict" in str(e):
        return f"weights{inside} do not fit the model its config builds ({str(e).splitlines()[0][:160]})"
    return None
