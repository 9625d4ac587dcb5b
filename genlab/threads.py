"""CPU threading for the ``genlab`` command: libgomp's wait policy before torch loads, and training's thread count.

torch's CPU kernels run on an OpenMP pool (GNU libgomp in the PyPI wheels). With libgomp's default wait policy a
thread that finishes its share of a parallel region spins for a while (``GOMP_SPINCOUNT``, 300,000 turns) before it
sleeps, and the next region's barrier waits for every peer. When another process holds one of the cores, the peer
that was descheduled arrives late and the spinning threads burn the time slices it needed: on a 2-core machine beside
one busy process, quickstart training ran ~23x slower (9 instead of ~209 images/s, issue 15); one thread, which has
no peer to wait for, ran at its own alone rate.

Two measures:

- **Training** keeps libgomp's spinning (it is worth up to ~17% of the idle rate: a spin count of 1,000 ran 77.6
  img/s alone against 92.5 spinning) and adapts its thread count instead: a ``ThreadGovernor`` times every
  optimizer step and, when the steps slow down, tries half the threads for two steps and keeps whichever count was
  faster; while it runs on fewer threads than it started with it tries more again once the machine has idle CPU time
  (``/proc/stat``; every 50-400 steps where that cannot be read). Weights do not depend on the thread count
  (tests/test_threads.py trains the smoke presets at 1, 2 and alternating thread counts and compares bitwise).
- **Every other command** (sampling, evaluation, caching: short, and not timed step by step) sets
  ``GOMP_SPINCOUNT=1000``, a few microseconds of spinning, so it degrades in proportion under load.

Measured with ``benchmarks/train_contended.py --steps 40 --repeats 2 --policies old,default,spin1000`` (quickstart,
batch 64, 2 cores, nothing else running, load average 0.9 before; medians of 2 interleaved runs, img/s):
fixed 2 threads spinning (genlab before issue 15) 92.5 alone, 31.2 beside one busy process (34%); the governor
89.0 alone (96% of that: its one comparison at the start is inside the 40 timed steps), 57.0 beside it (64% of its
alone rate, on one thread from the 6th step); ``GOMP_SPINCOUNT=1000`` at 2 threads (the first fix) 77.6 and 51.7.

Overrides: ``OMP_NUM_THREADS`` (torch's own variable) fixes the thread count and turns the governor off (it is never
changed here); a ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` in the environment is kept as it is, and then genlab sets
neither (``ACTIVE`` spins as long as it likes, ``PASSIVE`` never spins). libgomp reads the variables once, when torch
loads it, which is why ``configure`` runs at the very top of ``genlab.cli.main``.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from collections.abc import Callable

DEFAULTS = {"GOMP_SPINCOUNT": "1000"}
USER_CHOICES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # either one set by the user: genlab sets nothing
ADAPTIVE_COMMANDS = ("train",)  # their thread count is a ThreadGovernor's; libgomp spins as it comes


def configure(argv: list[str] | None = None, environ: dict | None = None) -> dict[str, str]:
    """Set the defaults not already set in ``environ`` (``os.environ``) for the command in ``argv``; returns them.

    It has an effect only before torch (libgomp) is imported in this process; child processes
    (DataLoader workers, ``torchrun``'s) inherit the variables either way."""
    env = os.environ if environ is None else environ
    argv = list(argv or [])
    command = next((a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1 : i] != ["--nproc"]), None)
    if command in ADAPTIVE_COMMANDS or any(k in env for k in USER_CHOICES):
        return {}
    added = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(added)
    return added


def idle_cpu_reader(path: str = "/proc/stat") -> Callable[[], float | None] | None:
    """A function returning how many CPUs were idle on average since its previous call (Linux), else None."""

    def totals() -> tuple[int, int] | None:
        try:
            with open(path) as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait; user..steal

    last = totals()
    if last is None:
        return None
    cpus = os.cpu_count() or 1

    def idle_cpus() -> float | None:
        nonlocal last
        now = totals()
        if now is None or now[1] <= last[1]:
            return None
        idle = cpus * (now[0] - last[0]) / (now[1] - last[1])
        last = now
        return idle

    return idle_cpus


class ThreadGovernor:
    """Chooses a CPU training loop's thread count from the loop's own step times.

    Call ``step(seconds)`` after each optimizer step. After ``warmup`` steps it times ``window`` steps at the
    starting count and ``window`` at half of it, and keeps the faster (by ``margin``); from then on the median of
    the last ``window`` steps running ``slowdown`` times above the count's reference time (a busy neighbour took a
    core) starts the same comparison against half the threads; below the starting count it tries twice the threads
    whenever ``idle_cpus()`` reports a free CPU for them (or, without that signal, every ``probe_every`` steps,
    doubling to ``max_probe_every`` after each try that lost). The first step after raising the count is not timed
    (the pool starts its threads). The thread count changes only between steps, and the weights do not depend on
    it, so a run's result is the same whatever it chooses."""

    def __init__(
        self,
        threads: int,
        set_threads: Callable[[int], None],
        *,
        idle_cpus: Callable[[], float | None] | None = None,
        warmup: int = 2,
        window: int = 2,
        margin: float = 0.9,
        slowdown: float = 1.3,
        probe_every: int = 50,
        max_probe_every: int = 400,
    ):
        self.max_threads, self.threads, self._set = threads, threads, set_threads
        self.idle_cpus, self.warmup, self.window, self.margin = idle_cpus, warmup, window, margin
        self.slowdown, self.probe_every, self.max_probe_every = slowdown, probe_every, max_probe_every
        self.reference: dict[int, float] = {}  # thread count -> its median step time when last compared
        self.recent: deque[float] = deque(maxlen=window)
        self.steps = 0
        self.since_probe = 0
        self.interval = probe_every
        self.probe: tuple[int, list[float], int] | None = None  # (candidate, its step times, steps to skip)
        self.switches: list[tuple[int, int]] = []  # (step, new thread count)

    def step(self, seconds: float) -> int:
        """Record one optimizer step's wall time; returns the thread count for the next step."""
        self.steps += 1
        if self.steps <= self.warmup:
            return self.threads
        if self.probe is not None:
            return self._probe_step(seconds)
        self.recent.append(seconds)
        self.since_probe += 1
        if len(self.recent) < self.window:
            return self.threads
        now = statistics.median(self.recent)
        ref = self.reference.get(self.threads)
        if self.threads > 1 and (ref is None or now > self.slowdown * ref):
            return self._start(max(1, self.threads // 2))
        if self.threads < self.max_threads and self._worth_trying_more():
            return self._start(min(self.max_threads, self.threads * 2))
        self.reference.setdefault(self.threads, now)
        return self.threads

    def _worth_trying_more(self) -> bool:
        idle = self.idle_cpus() if self.idle_cpus is not None else None
        if idle is not None:
            return idle >= 0.6 * (min(self.max_threads, self.threads * 2) - self.threads)
        return self.since_probe >= self.interval

    def _start(self, candidate: int) -> int:
        self.reference[self.threads] = statistics.median(self.recent)
        self.probe = (candidate, [], 1 if candidate > self.threads else 0)
        self._set(candidate)
        return candidate

    def _probe_step(self, seconds: float) -> int:
        candidate, times, skip = self.probe
        if skip:
            self.probe = (candidate, times, skip - 1)
            return candidate
        times.append(seconds)
        if len(times) < self.window:
            return candidate
        self.probe, self.since_probe = None, 0
        self.recent.clear()
        tried = statistics.median(times)
        if tried < self.margin * self.reference[self.threads]:
            self.threads, self.interval = candidate, self.probe_every
            self.reference[candidate] = tried
            self.switches.append((self.steps, candidate))
        else:
            self.interval = min(2 * self.interval, self.max_probe_every)
            self._set(self.threads)
        if self.idle_cpus is not None:
            self.idle_cpus()  # the next idle reading covers only the steps after this comparison
        return self.threads


def training_governor(device_type: str, num_processes: int, environ: dict | None = None) -> ThreadGovernor | None:
    """The governor for a training loop, or None where the thread count is fixed: the user set ``OMP_NUM_THREADS``,
    the loop is not on the CPU, several processes share the machine (torchrun), or torch runs one thread anyway."""
    import torch

    env = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in env or device_type != "cpu" or num_processes > 1 or torch.get_num_threads() < 2:
        return None
    return ThreadGovernor(torch.get_num_threads(), torch.set_num_threads, idle_cpus=idle_cpu_reader())
