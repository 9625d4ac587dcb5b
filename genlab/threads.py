"""CPU threading defaults for the ``genlab`` command, applied before torch is first imported.

torch's CPU kernels run on an OpenMP pool (GNU libgomp in the PyPI wheels). With libgomp's default wait
policy a thread that finishes its share of a parallel region spins for a while before it sleeps, and at the
next region's barrier it waits for every peer. When another process holds one of the cores, the peer that
was descheduled arrives late and the spinning threads burn the time slices it needed: on a 2-core machine
beside one busy process, quickstart training ran ~23x slower (9 instead of ~209 images/s, issue 15).
``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep at once, so a busy neighbour costs about its share of
the CPU and no more (``benchmarks/train_contended.py`` measures both). libgomp reads the variable once, when
torch loads it, which is why this runs at the very top of ``genlab.cli.main``.

Overrides: a ``OMP_WAIT_POLICY`` set in the environment is kept as it is (``OMP_WAIT_POLICY=ACTIVE`` restores
spinning, e.g. on a machine reserved for one job); ``OMP_NUM_THREADS`` (torch's own variable) sets the number
of threads and is never changed here.
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure(environ: dict | None = None) -> dict[str, str]:
    """Set the defaults not already set in ``environ`` (``os.environ``); returns what was set.

    It has an effect only before torch (libgomp) is imported in this process; child processes
    (DataLoader workers, ``torchrun``'s) inherit the variables either way."""
    env = os.environ if environ is None else environ
    added = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(added)
    return added
