"""The trainer's state as safetensors + JSON, read back with nothing that can run code.

accelerate's ``save_state`` pickles the scheduler, the EMA and the RNG states (``custom_checkpoint_*.pkl``,
``random_states_*.pkl``) and unpickles them in full on resume, so a checkpoint folder someone hands you could run
code. genlab writes each part itself instead:

- ``model.safetensors``: the (unwrapped) model's state dict;
- ``optimizer.safetensors`` / ``optimizer_1.safetensors``: the optimizers' tensors, their param groups and
  scalar state as JSON in the file's metadata;
- ``ema.safetensors``: the EMA's shadow parameters, its counters as JSON metadata;
- ``rng_R.safetensors``: process R's torch (CPU and CUDA), numpy and Python RNG states;
- ``schedulers.json``: the LR schedulers' and the fp16 grad scaler's state.

Under FSDP (``genlab.train.fsdp``) every process calls the ``save_*`` functions, which gather each sharded tensor
(``write=False`` on all but the main process), and each process loads its own shard of the same full files.

Every value read back is checked against the live object it replaces (keys, shapes, dtypes, JSON types), and
every problem is a ``CorruptFileError`` naming the file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from genlab.safeio import CorruptFileError, load_safetensors_checked, read_json_checked, safetensors_metadata
from genlab.train.fsdp import full, like

MODEL, EMA, SCHEDULERS = "model.safetensors", "ema.safetensors", "schedulers.json"


def optimizer_file(i: int) -> str:
    return "optimizer.safetensors" if i == 0 else f"optimizer_{i}.safetensors"


def rng_file(rank: int) -> str:
    return f"rng_{rank}.safetensors"


def _cpu(t: Tensor) -> Tensor:
    return full(t).detach().cpu().contiguous()


def _meta(path: Path) -> dict:
    try:
        return json.loads(safetensors_metadata(path).get("genlab", ""))
    except json.JSONDecodeError:
        raise CorruptFileError(f"{path}: its genlab metadata is not JSON") from None


# ----------------------------------------------------------------------------- model


def save_model(model: torch.nn.Module, path: Path, write: bool = True) -> None:
    # copies, so that tied weights (two keys, one storage) are stored as two plain tensors
    tensors = {k: full(v).detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    if write:
        save_file(tensors, str(path))


def load_model(model: torch.nn.Module, path: Path) -> None:
    own = model.state_dict()
    tensors = load_safetensors_checked(path, own.keys(), {k: tuple(v.shape) for k, v in own.items()})
    _same_dtypes(path, tensors, own)
    model.load_state_dict({k: like(v, own[k]) for k, v in tensors.items()})


def _same_dtypes(path: Path, tensors: dict[str, Tensor], own: dict[str, Tensor]) -> None:
    for k, v in tensors.items():
        if v.dtype != own[k].dtype:
            raise CorruptFileError(f"{path}: tensor {k!r} is {v.dtype}, expected {own[k].dtype}")


# ----------------------------------------------------------------------------- optimizer


def save_optimizer(opt: torch.optim.Optimizer, path: Path, write: bool = True) -> None:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{name}"] = _cpu(value)
            else:
                scalars[f"{idx}.{name}"] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    if write:
        save_file(tensors, str(path), metadata={"genlab": json.dumps(meta)})


def load_optimizer(opt: torch.optim.Optimizer, params: list[Tensor], path: Path) -> None:
    """Load into ``opt`` (whose parameters, in order, are ``params``) what ``save_optimizer`` wrote."""
    meta = _meta(path)
    tensors = load_safetensors_checked(path)
    live = opt.state_dict()["param_groups"]
    groups = meta.get("param_groups") if isinstance(meta, dict) else None
    if not isinstance(groups, list) or len(groups) != len(live):
        raise CorruptFileError(f"{path}: holds {len(groups or [])} parameter groups, the optimizer has {len(live)}")
    checked = [_checked_group(path, g, ref) for g, ref in zip(groups, live)]
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise CorruptFileError(f"{path}: its scalar state is not a mapping")
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *scalars.items()]:
        idx, _, name = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not name:
            raise CorruptFileError(f"{path}: state entry {key!r} names no parameter of this optimizer")
        p = params[int(idx)]
        if isinstance(value, Tensor):
            if value.dim() > 0 and tuple(value.shape) != tuple(p.shape):
                raise CorruptFileError(f"{path}: {key} has shape {tuple(value.shape)}, the parameter {tuple(p.shape)}")
            value = like(value, p) if value.dim() > 0 else value
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CorruptFileError(f"{path}: state entry {key!r} is not a number")
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": checked})


def _checked_group(path: Path, group: Any, ref: dict) -> dict:
    """A saved param group, accepted only with the live group's keys, value types and parameter ids."""
    if not isinstance(group, dict) or set(group) != set(ref):
        raise CorruptFileError(f"{path}: a parameter group has other keys than this optimizer's")
    out = {}
    for k, v in group.items():
        want = ref[k]
        if isinstance(want, tuple) and isinstance(v, list):
            v = tuple(v)
        ok = (
            type(v) is type(want)
            or (want is None and v is None)
            or (isinstance(want, float) and type(v) is int)
            or (isinstance(want, (int, float)) and type(v) in (int, float) and not isinstance(want, bool))
        )
        if not ok:
            raise CorruptFileError(f"{path}: parameter group entry {k!r} is {v!r}, expected a {type(want).__name__}")
        if k == "params" and list(v) != list(want):
            raise CorruptFileError(f"{path}: a parameter group holds other parameters than this optimizer's")
        out[k] = v
    return out


# ----------------------------------------------------------------------------- EMA


def save_ema(ema, path: Path, write: bool = True) -> None:
    sd = ema.state_dict()
    tensors = {f"shadow.{i}": _cpu(t) for i, t in enumerate(sd["shadow_params"])}
    scalars = {k: v for k, v in sd.items() if k != "shadow_params"}
    if write:
        save_file(tensors, str(path), metadata={"genlab": json.dumps(scalars)})


def load_ema(ema, path: Path) -> None:
    own = ema.shadow_params
    keys = [f"shadow.{i}" for i in range(len(own))]
    tensors = load_safetensors_checked(path, keys, {k: tuple(t.shape) for k, t in zip(keys, own)})
    _same_dtypes(path, tensors, dict(zip(keys, own)))
    scalars = _meta(path)
    live = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    if not isinstance(scalars, dict) or set(scalars) != set(live):
        raise CorruptFileError(f"{path}: the EMA's counters are not {', '.join(sorted(live))}")
    for k, v in scalars.items():
        if isinstance(v, bool) != isinstance(live[k], bool) or not isinstance(v, (int, float)):
            raise CorruptFileError(f"{path}: EMA entry {k!r} is {v!r}")
    if isinstance(live["min_decay"], float):
        scalars["min_decay"] = float(scalars["min_decay"])
    ema.load_state_dict({**scalars, "shadow_params": [like(tensors[k].to(t.device), t) for k, t in zip(keys, own)]})


# ----------------------------------------------------------------------------- RNG


def save_rng(path: Path) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_kind, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np_key.astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    tensors["python"] = torch.tensor(py_state, dtype=torch.int64)
    meta = {
        "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [py_version, py_gauss],
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    save_file(tensors, str(path), metadata={"genlab": json.dumps(meta)})


def load_rng(path: Path) -> None:
    meta = _meta(path)
    tensors = load_safetensors_checked(path)
    try:
        np_kind, np_pos, np_has_gauss, np_gauss = meta["numpy"]
        py_version, py_gauss = meta["python"]
        torch_state, np_key, py_state = tensors["torch"], tensors["numpy"], tensors["python"]
        if torch_state.dtype != torch.uint8 or np_key.shape != (624,) or py_state.shape != (625,):
            raise ValueError("shapes")
        if np_key.min() < 0 or np_key.max() >= 2**32 or py_state.min() < 0 or py_state.max() >= 2**32:
            raise ValueError("range")
        cuda = [tensors[f"cuda.{i}"] for i in range(int(meta["cuda_devices"]))]
        np_state = (str(np_kind), np_key.numpy().astype(np.uint32), int(np_pos), int(np_has_gauss), float(np_gauss))
        py = (int(py_version), tuple(int(v) for v in py_state.tolist()), None if py_gauss is None else float(py_gauss))
        torch.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CorruptFileError(f"{path}: not a genlab RNG state ({type(e).__name__}: {e})") from None
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


# ----------------------------------------------------------------------------- schedulers


def scheduler_state(sched) -> dict:
    sd = dict(sched.state_dict())
    sd.pop("lr_lambdas", None)  # closures of diffusers' schedules: rebuilt from the config, never stored
    return sd


def load_scheduler(sched, state: Any, path: Path, name: str) -> None:
    live = scheduler_state(sched)
    if not isinstance(state, dict) or set(state) != set(live):
        raise CorruptFileError(f"{path}: {name} has other keys than the scheduler's ({', '.join(sorted(live))})")
    for k, v in state.items():
        if not _json_like(v, live[k]):
            raise CorruptFileError(f"{path}: {name}.{k} is {v!r}")
    sched.load_state_dict({**state, "lr_lambdas": [None] * len(sched.lr_lambdas)})


def _json_like(value: Any, ref: Any) -> bool:
    """``value`` has the JSON shape of ``ref``: the same kind of number, bool, None or list of numbers."""
    if isinstance(ref, bool) or ref is None:
        return type(value) is type(ref)
    if isinstance(ref, (int, float)):
        return type(value) in (int, float)
    if isinstance(ref, (list, tuple)):
        return isinstance(value, list) and len(value) == len(ref) and all(_json_like(v, r) for v, r in zip(value, ref))
    return False


def load_schedulers(path: Path, scheds: dict[str, Any], scaler=None) -> None:
    data = read_json_checked(path)
    for name, sched in scheds.items():
        if name not in data:
            raise CorruptFileError(f"{path}: has no {name}")
        load_scheduler(sched, data[name], path, name)
    if scaler is not None:
        live = scaler.state_dict()
        saved = data.get("scaler")
        if (
            not isinstance(saved, dict)
            or set(saved) != set(live)
            or not all(_json_like(saved[k], live[k]) for k in live)
        ):
            raise CorruptFileError(f"{path}: has no valid fp16 grad-scaler state")
        scaler.load_state_dict(saved)
