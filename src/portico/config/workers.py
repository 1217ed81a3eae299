"""How many gateway processes ``portico serve`` runs: ``gateway.workers`` or ``--workers``.

One function decides it, :func:`worker_count`, so that what serves and what checks a config
agree: a check that must know whether state would be per process (a policy's counters without
Redis) asks it too.
"""

from __future__ import annotations

import os
from typing import Literal

from portico.config.model import MAX_WORKERS, PorticoConfig

__all__ = ["WorkersSetting", "cpu_count", "parse_workers", "worker_count"]

WorkersSetting = int | Literal["auto"]


def cpu_count() -> int:
    """The cores this process may run on: its CPU affinity (a container's cpuset, ``taskset``),
    not every core of the machine."""
    process_cpu_count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if process_cpu_count is not None:
        counted = process_cpu_count()
    elif hasattr(os, "sched_getaffinity"):
        counted = len(os.sched_getaffinity(0))
    else:
        counted = os.cpu_count()
    return max(1, min(counted or 1, MAX_WORKERS))


def worker_count(config: PorticoConfig, flag: WorkersSetting | None = None) -> int:
    """The gateway processes to run: ``flag`` (``serve --workers``) when given, else
    ``gateway.workers``; ``auto`` is :func:`cpu_count`."""
    setting = config.gateway.workers if flag is None else flag
    return cpu_count() if setting == "auto" else setting


def parse_workers(text: str) -> WorkersSetting:
    """``--workers``: a number from 1 to :data:`MAX_WORKERS`, or ``auto``; ``ValueError`` else."""
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(
            f"{text!r} is not a number of workers: give 1 to {MAX_WORKERS}, or auto (one per core)"
        )
    return int(text)
