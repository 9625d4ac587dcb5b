"""FSDP through accelerate: ``train.fsdp: true``, or accelerate's own FSDP config (``accelerate launch --use_fsdp``).

accelerate's FullyShardedDataParallelPlugin (FSDP2, ``fully_shard``) shards every parameter, its gradient and its
optimizer state over the processes; parameters become DTensors. genlab's checkpoints stay the full, unsharded state
of any other run: every DTensor is gathered into its full tensor before it is written (``full``) and a full tensor
read back is cut into this process's shard by the live DTensor's placements (``like``), so a checkpoint written under
FSDP resumes with or without FSDP, on any process count.

On GPUs accelerate enables FSDP itself. On CPU processes (gloo) accelerate 1.16 runs MULTI_CPU data parallel and
leaves an FSDP plugin out silently; torch's ``fully_shard`` runs there over gloo, so genlab hands accelerate's state
the plugin and the FSDP type (``enable_on_cpu``) and accelerate's own FSDP2 preparation then runs unchanged.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


class FSDPError(RuntimeError):
    """An FSDP combination genlab does not run; the message says what to change."""


def wanted(cfg) -> bool:
    """``train.fsdp``, or accelerate's launcher asked for FSDP (``--use_fsdp`` / its config file)."""
    return bool(cfg.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def plugin(cfg, world_size: int, has_discriminator: bool):
    """accelerate's FSDP2 plugin for ``cfg`` (its other options from accelerate's ``FSDP_*`` environment, as
    ``accelerate launch`` sets them), or FSDPError for what genlab does not run."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    if has_discriminator:
        raise FSDPError("train.fsdp: a task with a discriminator (a second optimizer) is not sharded; train it "
                        "without FSDP")  # fmt: skip
    if world_size < 2:
        raise FSDPError("train.fsdp needs 2 or more processes (accelerate launch --num_processes N); one process "
                        "has nothing to shard over")  # fmt: skip
    if os.environ.get("FSDP_VERSION", "2") != "2":
        raise FSDPError("genlab runs FSDP2 only: set fsdp_version: 2 in accelerate's config (--fsdp_version 2)")
    wrap = [n.strip() for n in cfg.fsdp_wrap.split(",") if n.strip()]
    kwargs = {"auto_wrap_policy": "transformer_based_wrap", "transformer_cls_names_to_wrap": wrap} if wrap else {}
    return FullyShardedDataParallelPlugin(fsdp_version=2, **kwargs)


def check_wrap(cfg, model: torch.nn.Module) -> None:
    """FSDPError unless every class of ``train.fsdp_wrap`` is a module class of ``model``."""
    have = {type(m).__name__ for m in model.modules()}
    missing = [n.strip() for n in cfg.fsdp_wrap.split(",") if n.strip() and n.strip() not in have]
    if missing:
        raise FSDPError(f"train.fsdp_wrap: {type(model).__name__} has no module of class {', '.join(missing)}")


def enable_on_cpu(acc, fsdp_plugin) -> None:
    """Give a MULTI_CPU accelerator state the FSDP plugin it left out (see the module docstring)."""
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.MULTI_CPU:
        acc.state.fsdp_plugin = fsdp_plugin
        acc.state.distributed_type = DistributedType.FSDP
    if acc.distributed_type != DistributedType.FSDP:
        raise FSDPError(f"train.fsdp: accelerate runs these processes as {acc.distributed_type}, not FSDP")
    check_version(acc)


def check_version(acc) -> None:
    if not acc.is_fsdp2:
        raise FSDPError("genlab runs FSDP2 only: set fsdp_version: 2 in accelerate's config (--fsdp_version 2)")


def full(t: Tensor) -> Tensor:
    """The whole tensor of a DTensor shard (a collective: every process calls it, in the same order), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(t: Tensor, live: Tensor) -> Tensor:
    """A full tensor ``t`` as this process's shard of ``live`` when ``live`` is a DTensor (no communication: every
    process holds ``t``), else ``t`` itself."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(live, DTensor):
        return t
    return distribute_tensor(t.to(live.device), live.device_mesh, live.placements, src_data_rank=None)


def local(t: Tensor) -> Tensor:
    """This process's shard of a DTensor (a view, no communication), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t
