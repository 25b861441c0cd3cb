"""How many worker processes reconcile a job: a number given, or ``"auto"``.

Apart from the Arrow code it sizes, so an operator can check its setting when a DAG file is parsed.
"""

from __future__ import annotations

import os

AUTO = "auto"
MOST_PROCESSES = 8  # past this the task's own process, which stages every row, is the bottleneck
MIN_ROWS_PER_PROCESS = 20_000  # below this a worker's fork and file copies cost more than it saves


def check_processes(setting: int | str) -> int | str:
    """``setting`` if it is ``"auto"`` or a whole number of at least 1; otherwise a ValueError."""
    if setting == AUTO or (isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1):
        return setting
    raise ValueError(f"reconcile_processes must be 'auto' or a whole number of at least 1, got {setting!r}")


def resolve_processes(setting: int | str, shards: int, rows: int) -> int:
    """
    The worker processes to reconcile ``rows`` requests in ``shards`` with.

    A number given is capped by what can use it: a worker per shard, or per ``MIN_ROWS_PER_PROCESS``
    requests (a shard's lines are split into ranges). ``"auto"`` is the cores this process may run
    on (its CPU affinity, which container limits narrow), at most ``MOST_PROCESSES`` and one per
    ``MIN_ROWS_PER_PROCESS`` requests, so a small job stays in the task's own process.
    """
    if check_processes(setting) != AUTO:
        return max(1, min(int(setting), max(shards, rows // MIN_ROWS_PER_PROCESS)))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MOST_PROCESSES, rows // MIN_ROWS_PER_PROCESS))
