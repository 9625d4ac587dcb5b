"""``genlab --nproc N CMD …``: CMD in N processes on this machine, as ``torchrun --standalone --nproc_per_node N
-m genlab -- CMD …`` would run it, but exiting like one genlab process.

Under torchrun, a process that stops on bad input prints its one line (``genlab CMD: error: …``, status 2) and
torchrun then adds its own log lines, a ``ChildFailedError`` traceback and a failure table, and exits with status 1.
genlab cannot change what torchrun prints once torchrun is the parent; as the parent itself, it runs torchrun's
launcher (``torch.distributed.run``) in-process, keeps its logs quiet and returns the first failed process's exit
status (128 + N for a process killed by signal N) with nothing added to what the processes printed.
"""

from __future__ import annotations

import logging
import os

MAX_PROCESSES = 256  # more processes than this on one machine is a typo, not a plan


def nproc_arg(text: str) -> int:
    """argparse type of ``--nproc``: an integer in 1 … MAX_PROCESSES."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if not 1 <= n <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"the number of processes must be 1 … {MAX_PROCESSES}, got {n}")
    return n


def in_launched_process(env=os.environ) -> bool:
    """Whether this process is one that torchrun (or ``accelerate launch``) started."""
    return "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env


def exit_status(exitcode: int) -> int:
    """A process's status as a shell reports it: its exit code, or 128 + N when signal N killed it."""
    return 128 - exitcode if exitcode < 0 else exitcode


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``genlab ARGV`` in ``nproc`` processes (torchrun's standalone rendezvous, gloo on a CPU); the first failed
    process's exit status, or 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its "failed (exitcode: 2)" lines repeat the child's
    args = parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", "genlab", "--", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        _, failure = e.get_first_failure()
        return exit_status(failure.exitcode)
    return 0
