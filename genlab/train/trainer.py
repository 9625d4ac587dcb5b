"""One trainer for everything: anything whose ``forward(batch) -> {"loss": ..., ...}`` is trainable.

Built on accelerate (device placement, data parallel, mixed precision); AdamW with diffusers'
warm-up/cosine schedules and diffusers' EMA. Every step's data and randomness are functions of
(seed, step), so a run resumed from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from genlab import threads
from genlab.config import TrainConfig
from genlab.nn.rng import sample_seeds
from genlab.safeio import CorruptFileError
from genlab.train import checkpoint, fsdp
from genlab.train import state as trainstate
from genlab.train.data import SampleStream, StepBatches, flips


class TrainError(RuntimeError):
    """A training run that cannot start as configured; the message says what to change."""


@dataclass
class BatchPlan:
    """How a global batch splits into micro-batches and processes."""

    batch_size: int
    grad_accum: int
    num_processes: int
    rank: int
    stream: SampleStream
    seed: int

    def __post_init__(self) -> None:
        per = self.batch_size // (self.grad_accum * self.num_processes)
        if per * self.grad_accum * self.num_processes != self.batch_size or per == 0:
            raise TrainError(
                f"train.batch_size={self.batch_size} must be a multiple of grad_accum ({self.grad_accum}) x "
                f"processes ({self.num_processes})"
            )
        self.local_batch = per

    def local(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices and per-sample seeds of this process's share of one micro-batch."""
        offset = micro * self.local_batch * self.num_processes + self.rank * self.local_batch
        positions = range(offset, offset + self.local_batch)  # positions within the global batch
        start = step * self.batch_size + offset
        return self.stream.indices(start, self.local_batch), sample_seeds(self.seed, step, positions)


@dataclass
class Hooks:
    """What the task does besides computing the loss (all called on the main process, EMA weights loaded)."""

    sample: Callable[[nn.Module, int, Path], None] | None = None  # (unwrapped model, step, out_dir)
    # True: ``sample`` runs on every process (EMA weights loaded on each) and shares its work through
    # genlab.train.dist (``share`` / ``gather_shares``), writing on the main process only
    sample_on_every_process: bool = False
    export: Callable[[nn.Module, Path], None] | None = None  # (unwrapped model, out_dir)


class Trainer:
    def __init__(self, cfg: TrainConfig, model: nn.Module, dataset, out_dir: Path, hooks: Hooks | None = None):
        self.cfg, self.dataset, self.out = cfg, dataset, Path(out_dir)
        self.hooks = hooks or Hooks()
        trackers = "tensorboard" if cfg.tensorboard and _has_tensorboard() else None
        # accelerate 1.15 takes torchrun's processes for MULTI_CPU only when told cpu=True; without it, on a machine
        # without a GPU, every process believes it is the only (main) one and trains the whole batch on its own
        world = int(os.environ.get("WORLD_SIZE", "1"))
        multi_cpu = world > 1 and not torch.cuda.is_available()
        disc = getattr(model, "discriminator", None)
        self.fsdp = fsdp.wanted(cfg)  # train.fsdp, or accelerate launch --use_fsdp (genlab/train/fsdp.py)
        if self.fsdp:
            _as_train_error(fsdp.check_wrap, cfg, model)
        sharding = {"fsdp_plugin": _as_train_error(fsdp.plugin, cfg, world, disc is not None)} if self.fsdp else {}
        self.acc = Accelerator(
            mixed_precision=cfg.mixed_precision, log_with=trackers, project_dir=str(self.out / "tensorboard"),
            cpu=multi_cpu, **sharding,
        )  # fmt: skip
        if self.fsdp:
            _as_train_error(fsdp.enable_on_cpu, self.acc, sharding["fsdp_plugin"])
        self.model = model.to(self.acc.device)
        # under FSDP the hooks (sampling, export) run on this unsharded copy with the gathered EMA weights loaded
        self.replica = copy.deepcopy(self.model) if self.fsdp and (self.hooks.sample or self.hooks.export) else None
        # a task with a ``discriminator`` (GAN terms of tokenizers) gets a second optimizer over its parameters
        self.disc_params = [p for p in disc.parameters() if p.requires_grad] if disc is not None else []
        in_disc = {id(p) for p in self.disc_params}
        self.params = [p for p in model.parameters() if p.requires_grad and id(p) not in in_disc]
        if not self.params:
            raise TrainError(f"{type(model).__name__} has no trainable parameters")
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        names = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
        self.sched = get_scheduler(
            names[cfg.lr_schedule], self.opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
        )
        if self.disc_params:
            d_opt = torch.optim.AdamW(
                self.disc_params, lr=cfg.disc_lr or cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
            )
            self.disc_sched = get_scheduler(
                names[cfg.lr_schedule], d_opt, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.steps
            )
            self.ddp_model, self.opt, self.disc_opt = self.acc.prepare(self.model, self.opt, d_opt)
        else:
            self.disc_opt = None
            self.ddp_model, self.opt = self.acc.prepare(self.model, self.opt)
        if self.fsdp:  # fully_shard replaced every parameter (in place in the module) by its DTensor shard
            self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMAModel(self.params, decay=cfg.ema_decay, foreach=True)
        # the scheduler is stepped by hand once per optimizer step, whatever the number of processes; it, the EMA
        # and the RNG states are checkpointed by genlab.train.state (safetensors + JSON), not by accelerate
        self.log_keys = tuple(getattr(model, "log_keys", ()))  # extra scalar outputs logged beside the loss
        self.bar_keys = tuple(k for k in getattr(model, "bar_keys", ()) if k in self.log_keys)  # shown in the bar
        self.on_log = getattr(model, "on_log", None)  # ``on_log(step, logged)`` on the main process after each log
        self.plan = BatchPlan(
            cfg.batch_size, cfg.grad_accum, self.acc.num_processes, self.acc.process_index,
            SampleStream(len(dataset), cfg.seed), cfg.seed,
        )  # fmt: skip
        self.ckpt_root = self.out / "checkpoints"
        # on the CPU the thread count follows the machine's load (genlab/threads.py); OMP_NUM_THREADS fixes it
        self.governor = threads.training_governor(self.acc.device.type, self.acc.num_processes)
        # the first step whose loss was not finite, kept on the device (see _check_loss)
        self._first_bad = torch.tensor(torch.iinfo(torch.long).max, device=self.acc.device)
        self.finite_check_every = 1 if self.acc.device.type == "cpu" else cfg.log_every

    # ------------------------------------------------------------------ state

    def resume(self, how: str | None) -> int:
        """Load a checkpoint: ``"auto"`` (the newest one that verifies, if any) or a path. Returns the step.

        ``"auto"`` skips a checkpoint that fails to verify or load, with a warning naming it, and takes the previous
        one; an explicit path must itself be valid."""
        if not how:
            return 0
        if how != "auto":
            try:
                return self._load(Path(how))
            except CorruptFileError as e:
                raise TrainError(f"cannot resume from {how}: {e}") from None
        candidates = checkpoint.step_folders(self.ckpt_root)
        problems = []
        for path in reversed(candidates):
            try:
                return self._load(path)
            except CorruptFileError as e:
                problems.append(f"{path.name}: {e}")
                if self.acc.is_main_process:
                    print(f"warning: skipping checkpoint {path}: {e}", file=sys.stderr)
        if candidates:
            raise TrainError(
                f"no checkpoint in {self.ckpt_root} could be loaded ({problems[0]}); "
                "start over with --overwrite, or resume from a copy of the run"
            )
        return 0

    def _load(self, path: Path) -> int:
        """Verify every file of the checkpoint ``path``, then load model, optimizers, EMA, schedulers and RNG."""
        if not (path / checkpoint.STATE_FILE).is_file():
            raise CorruptFileError(f"{path} is not a complete genlab checkpoint (no {checkpoint.STATE_FILE})")
        saved = checkpoint.verify(path)
        trainstate.load_model(self.model, path / trainstate.MODEL)
        for i, (opt, params) in enumerate(self._optimizers()):
            trainstate.load_optimizer(opt, params, path / trainstate.optimizer_file(i))
        trainstate.load_ema(self.ema, path / trainstate.EMA)
        trainstate.load_schedulers(path / trainstate.SCHEDULERS, self._schedulers(), self.acc.scaler)
        rng = trainstate.rng_file(self.acc.process_index)
        if rng in saved["files"]:
            trainstate.load_rng(path / rng)
        else:  # more processes than wrote the checkpoint: data and per-sample noise still follow (seed, step)
            print(f"warning: {path} holds no RNG state for process {self.acc.process_index}", file=sys.stderr)
        self.acc.print(f"resumed from {path} at step {saved['step']}")
        return saved["step"]

    def _optimizers(self) -> list[tuple[torch.optim.Optimizer, list[torch.Tensor]]]:
        pairs = [(self.opt, self.params)]
        if self.disc_opt is not None:
            pairs.append((self.disc_opt, self.disc_params))
        return pairs

    def _schedulers(self) -> dict:
        return {"lr": self.sched, **({"disc_lr": self.disc_sched} if self.disc_opt is not None else {})}

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step`` (all processes call this); refused if any weight is not finite."""
        self._raise_if_not_finite()
        bad = [p for p in self.params + self.disc_params if not torch.isfinite(fsdp.local(p)).all()]
        if self.fsdp:  # each process checked its shards
            bad = self.acc.gather(torch.tensor([len(bad)], device=self.acc.device)).sum().item() > 0
        if bad:  # every process sees the same weights, so every process raises here
            raise TrainError(
                f"the weights are not finite at step {step}; no checkpoint written (the newest is still "
                f"{checkpoint.latest_checkpoint(self.ckpt_root)}). Lower train.lr or enable train.grad_clip"
            )
        main = self.acc.is_main_process
        tmp = checkpoint.begin(self.ckpt_root, step) if main else None
        self.acc.wait_for_everyone()
        tmp = tmp or self.ckpt_root / f".tmp-step_{step:07d}"
        trainstate.save_rng(tmp / trainstate.rng_file(self.acc.process_index))
        if main or self.fsdp:  # under FSDP every process gathers the full tensors, the main one writes them
            trainstate.save_model(self.model, tmp / trainstate.MODEL, write=main)
            for i, (opt, _) in enumerate(self._optimizers()):
                trainstate.save_optimizer(opt, tmp / trainstate.optimizer_file(i), write=main)
            trainstate.save_ema(self.ema, tmp / trainstate.EMA, write=main)
        if main:
            scheds = {k: trainstate.scheduler_state(v) for k, v in self._schedulers().items()}
            if self.acc.scaler is not None:
                scheds["scaler"] = self.acc.scaler.state_dict()
            checkpoint.write_json_atomic(tmp / trainstate.SCHEDULERS, scheds)
        self.acc.wait_for_everyone()
        if main:
            info = {"steps": self.cfg.steps, "processes": self.acc.num_processes}
            checkpoint.commit(self.ckpt_root, tmp, step, info, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()

    def with_ema(self, fn: Callable[[nn.Module], None], *, every_process: bool = False) -> None:
        """Run ``fn(unwrapped model)`` on the main process (or on every process) with the EMA weights swapped in."""
        if self.fsdp:
            return self._with_ema_gathered(fn, every_process)
        if self.acc.is_main_process or every_process:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
            try:
                fn(self.model)
            finally:
                self.ema.restore(self.params)
        self.acc.wait_for_everyone()

    def _with_ema_gathered(self, fn: Callable[[nn.Module], None], every_process: bool) -> None:
        """``with_ema`` under FSDP: every process gathers the full weights, the EMA's in place of the trained
        parameters, which ``fn`` sees loaded into the unsharded ``replica``."""
        shadow = {id(p): s for p, s in zip(self.params, self.ema.shadow_params)}
        weights = {  # collectives, in the same key order on every process
            k: fsdp.full(shadow.get(id(v), v)).detach() for k, v in self.model.state_dict(keep_vars=True).items()
        }
        if self.acc.is_main_process or every_process:
            self.replica.load_state_dict(weights)
            del weights
            fn(self.replica)
        self.acc.wait_for_everyone()

    def _sample(self, step: int) -> None:
        every = self.hooks.sample_on_every_process
        self.with_ema(lambda m: self.hooks.sample(m, step, self.out), every_process=every)

    # ------------------------------------------------------------------ data

    def batches(self, start: int):
        """Yields, per optimizer step, a list of ``grad_accum`` micro-batches on the device."""
        dev = self.acc.device
        if hasattr(self.dataset, "get_batch"):
            for step in range(start, self.cfg.steps):
                micro = []
                for m in range(self.cfg.grad_accum):
                    idx, seeds = self.plan.local(step, m)
                    b = self.dataset.get_batch(idx, flips(seeds))
                    micro.append({**{k: _to(v, dev) for k, v in b.items()}, "seed": seeds})
                yield micro
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=StepBatches(self.plan, start, self.cfg.steps),
            num_workers=self.cfg.num_workers,
            pin_memory=dev.type == "cuda",
            persistent_workers=self.cfg.num_workers > 0,
            # its own generator: creating the iterator would otherwise draw from the global RNG, so a resumed run
            # (whose global RNG is restored to the checkpoint's) would drift from an uninterrupted one
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )
        it = iter(loader)
        for step in range(start, self.cfg.steps):
            micro = []
            for m in range(self.cfg.grad_accum):
                b = next(it)
                _, seeds = self.plan.local(step, m)
                micro.append({**{k: _to(v, dev) for k, v in b.items()}, "seed": seeds})
            yield micro

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: str | None = None, on_start: Callable[[], None] | None = None) -> int:
        """Train to ``cfg.steps``. ``on_start`` (main process) runs once the checkpoint, if any, has loaded and
        before anything is written to the run folder: a failed resume leaves the folder as it was."""
        cfg, acc = self.cfg, self.acc
        seed_host_rngs(cfg.seed, acc.process_index)
        start = self.resume(resume)
        if on_start is not None and acc.is_main_process:
            on_start()
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
        if acc.log_with:
            acc.init_trackers("genlab")
        bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not acc.is_main_process, dynamic_ncols=True)
        with _stop_on_sigint() as stop:
            stopped_at = self._loop(start, bar, stop)
        if stopped_at is not None:  # Ctrl-C loses nothing: checkpoint at the step boundary, then stop
            bar.close()
            self.save(stopped_at)
            if self.acc.is_main_process:
                print(
                    f"interrupted: saved a checkpoint at step {stopped_at}; continue with --resume auto",
                    file=sys.stderr,
                )
            raise KeyboardInterrupt
        bar.close()
        if start < cfg.steps or checkpoint.latest_checkpoint(self.ckpt_root) is None:
            self.save(cfg.steps)
        if self.hooks.sample:
            self._sample(cfg.steps)
        if self.hooks.export:
            self.with_ema(lambda m: self.hooks.export(m, self.out))
        acc.end_training()
        return cfg.steps

    def _loop(self, start: int, bar, stop: list[bool]) -> int | None:
        """Train from ``start``; returns the step reached if Ctrl-C asked to stop early, else None."""
        cfg, acc = self.cfg, self.acc
        log_sum, log_n, t_log = torch.zeros((), device=acc.device), 0, time.perf_counter()
        extra_sum = torch.zeros(len(self.log_keys), device=acc.device)
        set_step = getattr(self.model, "set_step", None)  # tasks whose losses depend on the step (GAN start)
        step = start
        for step_batches in self.batches(start):
            t_step = time.perf_counter()
            if set_step is not None:
                set_step(step)
            step_loss = torch.zeros((), device=acc.device)
            for m, batch in enumerate(step_batches):
                last = m == len(step_batches) - 1
                ctx = acc.no_sync(self.ddp_model) if not last else nullcontext()
                with ctx:
                    out = self.ddp_model(batch)
                    loss = out["loss"]
                    # one backward: the task keeps the two losses' gradients on disjoint parameter sets
                    total = loss + out["discriminator_loss"] if self.disc_opt is not None else loss
                    acc.backward(total / cfg.grad_accum)
                log_sum += loss.detach().float() / cfg.grad_accum
                step_loss = step_loss + total.detach().float()  # both losses of a GAN task
                if self.log_keys:
                    extra_sum += torch.stack([out[k].detach().float() for k in self.log_keys]) / cfg.grad_accum
            self._check_loss(step_loss, step + 1)
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            if self.disc_opt is not None:
                if cfg.grad_clip > 0:
                    acc.clip_grad_norm_(self.disc_params, cfg.grad_clip)
                self.disc_opt.step()
                self.disc_sched.step()
                self.disc_opt.zero_grad(set_to_none=True)
            self.ema.step(self.params)
            if self.governor is not None:
                self.governor.step(time.perf_counter() - t_step)
            step += 1
            log_n += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                extra = {}
                if self.log_keys:
                    means = (acc.reduce(extra_sum, "mean") / log_n).tolist()
                    extra = dict(zip(self.log_keys, means))
                    extra_sum.zero_()
                self._log(
                    step, acc.reduce(log_sum, "mean").item() / log_n, log_n, time.perf_counter() - t_log, bar, extra
                )
                log_sum.zero_()
                log_n, t_log = 0, time.perf_counter()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                self.save(step)
            if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps and self.hooks.sample:
                self._sample(step)
            if stop[0] and step < cfg.steps and acc.num_processes == 1:
                print(f"\nstopping at step {step} (Ctrl-C again aborts without a checkpoint)", file=sys.stderr)
                return step
        return None

    def _check_loss(self, loss: torch.Tensor, step: int) -> None:
        """Stop once a non-finite loss is seen (``step`` is 1-based); every process agrees.

        On the CPU every step is checked before the optimizer applies it (reading a CPU tensor costs nothing). On a
        GPU, reading the flag is a host sync, so the first bad step is recorded on the device and read only every
        ``finite_check_every`` steps and before every checkpoint: the run then stops with that step named, and no
        checkpoint ever holds non-finite weights (``save`` refuses them too)."""
        bad = ~torch.isfinite(loss)
        never = torch.iinfo(torch.long).max
        self._first_bad = torch.minimum(self._first_bad, torch.where(bad, step, never))
        if step % self.finite_check_every == 0 or step == self.cfg.steps:
            self._raise_if_not_finite()

    def _raise_if_not_finite(self) -> None:
        first = self._first_bad
        if self.acc.num_processes > 1:
            first = self.acc.gather(first[None]).min()
        first = int(first.item())
        if first == torch.iinfo(torch.long).max:
            return
        last = checkpoint.latest_checkpoint(self.ckpt_root)
        applied = "nothing of that step was applied or saved" if self.finite_check_every == 1 else "nothing was saved"
        raise TrainError(
            f"the loss became non-finite at step {first}; {applied} (the newest checkpoint is "
            f"{last.name if last else 'none'}). Lower train.lr or enable train.grad_clip"
        )

    def _log(self, step: int, loss: float, n: int, seconds: float, bar, extra: dict | None = None) -> None:
        if not math.isfinite(loss):
            raise TrainError(f"loss became {loss} at step {step}; lower train.lr or enable train.grad_clip")
        img_s = n * self.cfg.batch_size / max(seconds, 1e-9)
        record = {
            "step": step,
            "loss": loss,
            "lr": self.sched.get_last_lr()[0],
            "img_per_s": img_s,
            **({"threads": self.governor.threads} if self.governor is not None else {}),
            **(extra or {}),
            "time": time.time(),
        }
        self.acc.log({k: v for k, v in record.items() if k not in ("step", "time")}, step=step)
        if self.acc.is_main_process:
            shown = {k: f"{extra[k]:.3g}" for k in self.bar_keys if extra and k in extra}
            bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{img_s:.0f}", **shown)
            if self.on_log is not None:
                self.on_log(step, extra or {})
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")


def _as_train_error(fn, *args):
    """``fn(*args)``, its FSDPError raised as the TrainError the CLI reports in one line."""
    try:
        return fn(*args)
    except fsdp.FSDPError as e:
        raise TrainError(str(e)) from None


def seed_host_rngs(seed: int, rank: int) -> None:
    """Seed numpy's and Python's global RNGs from ``train.seed`` (and the process), before a resume restores them.

    genlab draws nothing from them (every draw comes from per-sample seeds or torch's generators), but a library
    might; seeded, the states a checkpoint saves (``rng_R.safetensors``) are the same in two identical runs."""
    import random

    import numpy as np

    random.seed(seed * 1_000_003 + rank)
    np.random.seed((seed * 1_000_003 + rank) % 2**32)


def _to(value, device):
    """A batch entry on ``device``: a tensor, or a list of tensors (multi-scale token maps)."""
    if isinstance(value, (list, tuple)):
        return [v.to(device, non_blocking=True) for v in value]
    return value.to(device, non_blocking=True)


@contextmanager
def _stop_on_sigint():
    """The first Ctrl-C only asks the loop to stop at the next step boundary; a second one interrupts."""
    stop = [False]
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop[0]:
            raise KeyboardInterrupt
        stop[0] = True  # no I/O here: the handler may interrupt a write in progress

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True
