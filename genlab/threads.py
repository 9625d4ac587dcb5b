"""CPU threading defaults for the ``genlab`` command, applied before torch is first imported.

torch's CPU kernels run on an OpenMP pool (GNU libgomp in the PyPI wheels). With libgomp's default wait
policy a thread that finishes its share of a parallel region spins for a while before it sleeps, and at the
next region's barrier it waits for every peer. When another process holds one of the cores, the peer that
was descheduled arrives late and the spinning threads burn the time slices it needed: on a 2-core machine
beside one busy process, quickstart training ran ~23x slower (9 instead of ~209 images/s, issue 15).
Waiting less fixes it: libgomp spins ``GOMP_SPINCOUNT`` times before it sleeps (300,000 by default), and genlab
sets 1,000, a few microseconds. Measured with ``benchmarks/train_contended.py`` (quickstart, 30 steps at batch 64,
2 cores, load average ~2 before each run; one run each): spinning as it comes 92.9 img/s alone, 29.4 beside a busy
process (32%); ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) 73.9 alone (-20%), 56.3 beside it (76%);
``GOMP_SPINCOUNT=20000`` 88.1 and 34.0 (39%); ``GOMP_SPINCOUNT=1000`` 94.5 alone and 53.2 beside it (56%). Run side
by side in one benchmark run (``--policies old,default``) the alone rates differ more: 101.3 (spinning) against 84.0
(1,000 spins), beside a busy process 30.5 against 50.5 (60% of its alone rate): the short spin costs up to ~17% of
the idle rate in that comparison, PASSIVE ~20%, and both keep contention in proportion where spinning does not. libgomp reads the variables once, when torch loads
it, which is why this runs at the very top of ``genlab.cli.main``.

Overrides: a ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` set in the environment is kept as it is, and then genlab
sets nothing (``OMP_WAIT_POLICY=ACTIVE`` spins as long as it likes, e.g. on a machine reserved for one job;
``PASSIVE`` never spins); ``OMP_NUM_THREADS`` (torch's own variable) sets the number of threads and is never
changed here.
"""

from __future__ import annotations

import os

DEFAULTS = {"GOMP_SPINCOUNT": "1000"}
USER_CHOICES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # either one set by the user: genlab sets nothing


def configure(environ: dict | None = None) -> dict[str, str]:
    """Set the defaults not already set in ``environ`` (``os.environ``); returns what was set.

    It has an effect only before torch (libgomp) is imported in this process; child processes
    (DataLoader workers, ``torchrun``'s) inherit the variables either way."""
    env = os.environ if environ is None else environ
    if any(k in env for k in USER_CHOICES):
        return {}
    added = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(added)
    return added
