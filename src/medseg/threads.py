"""CPU threads: how many intra-op threads medseg uses, and how its OpenMP pool waits.

Why this module exists (issue 10, ``benchmarks/contention.py``): on a 2-core machine the
built-in default job ran 8x slower beside one other training, where a fair share of the cores
gives 2x. PyTorch's CPU wheels run their intra-op pool on GNU OpenMP, whose idle threads spin
for 300,000 iterations (``GOMP_SPINCOUNT``'s default) before they sleep. Alone that hides the
wake-up latency of many small parallel regions; beside another process that spins too, each
process's spinning threads hold the cores the other's threads are waiting on, and every
barrier waits for a thread that is not running. A short spin (1,000 iterations, libgomp's own
value when it knows it is oversubscribed) keeps the job's speed alone and removes the stall.

Two settings, both before any work:

* :func:`prepare_openmp` sets ``GOMP_SPINCOUNT=1000`` in the environment, unless the user set
  ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``; libgomp reads it when it is loaded, so it must run
  before ``import torch`` (the ``medseg`` command calls it first thing). Once torch is loaded it
  does nothing and says so.
* :func:`configure_threads` sets PyTorch's intra-op thread count: ``--threads N``, else
  ``OMP_NUM_THREADS`` if set, else :func:`usable_cores` (the cores this process may run on:
  its CPU affinity, capped by a cgroup CPU quota, as in a container given ``--cpus``), never
  ``os.cpu_count()`` (every core of the host).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: libgomp's spin count when medseg sets it (iterations an idle thread spins before it sleeps).
SPINCOUNT = "1000"

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cgroup_cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: ``len(os.sched_getaffinity(0))`` (``os.cpu_count()`` where the
    platform has no affinity), capped by the cgroup v2 CPU quota (``cpu.max``: ``"200000 100000"``
    is 2 cores, ``"150000 100000"`` rounds up to 2, ``"max 100000"`` is no cap). At least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def prepare_openmp(environ: dict | None = None) -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPINCOUNT` in ``environ`` (default ``os.environ``) unless
    the user set it or ``OMP_WAIT_POLICY``. Returns True if it set it and torch was not yet loaded
    (only then does it take effect: libgomp reads its environment once, when it is loaded)."""
    env = os.environ if environ is None else environ
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env:
        return False
    env["GOMP_SPINCOUNT"] = SPINCOUNT
    return "torch" not in sys.modules


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op thread count in use, where it came from and the cores this process may use."""

    threads: int
    source: str  # "--threads", "OMP_NUM_THREADS" or "usable cores"
    usable_cores: int

    def describe(self) -> str:
        """One line for the run log, e.g. ``threads: 2 (from usable cores; this process may use 2 cores)``."""
        return f"threads: {self.threads} (from {self.source}; this process may use {self.usable_cores} cores)"


def choose_threads(requested: int | None = None, environ: dict | None = None) -> ThreadChoice:
    """The thread count :func:`configure_threads` would set, without setting it.

    Raises:
        medseg.errors.ConfigError: ``requested`` (``--threads``) or ``OMP_NUM_THREADS`` is not an
            integer >= 1.
    """
    from medseg.errors import ConfigError

    env = os.environ if environ is None else environ
    cores = usable_cores()
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ConfigError(
                f"--threads: must be an integer >= 1 (got {requested!r}); this process may use {cores} cores"
            )
        return ThreadChoice(requested, "--threads", cores)
    if env.get("OMP_NUM_THREADS"):
        raw = env["OMP_NUM_THREADS"].split(",")[0].strip()
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"OMP_NUM_THREADS: must be an integer >= 1 (got {env['OMP_NUM_THREADS']!r})")
        return ThreadChoice(int(raw), "OMP_NUM_THREADS", cores)
    return ThreadChoice(cores, "usable cores", cores)


def configure_threads(requested: int | None = None) -> ThreadChoice:
    """Set PyTorch's intra-op thread count (``torch.set_num_threads``) as :func:`choose_threads`
    says, and return the choice. Inter-op threads are left to PyTorch.

    Raises:
        medseg.errors.ConfigError: as :func:`choose_threads`.
    """
    import torch

    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
