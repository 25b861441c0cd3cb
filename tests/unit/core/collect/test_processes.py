"""How many worker processes reconcile: the number given, capped by what can use it, or the cores for "auto"."""

from __future__ import annotations

import os

import pytest

from airflow_provider_openai_batch.core.collect.processes import (
    MIN_ROWS_PER_PROCESS,
    MOST_PROCESSES,
    check_processes,
    resolve_processes,
)


@pytest.mark.parametrize(
    ("cores", "rows", "expected"),
    [
        (2, 1_200_000, 2),  # the cores this process may use
        (64, 1_200_000, MOST_PROCESSES),  # at most this many
        (64, 3 * MIN_ROWS_PER_PROCESS, 3),  # one per MIN_ROWS_PER_PROCESS requests
        (4, MIN_ROWS_PER_PROCESS - 1, 1),  # a small job stays in the task's process
    ],
)
def test_auto_is_the_usable_cores_capped_by_a_maximum_and_the_job_size(monkeypatch, cores, rows, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert resolve_processes("auto", shards=1, rows=rows) == expected


def test_a_number_given_is_capped_by_the_shards_and_the_ranges_they_split_into():
    assert resolve_processes(4, shards=24, rows=1_200_000) == 4
    assert resolve_processes(4, shards=3, rows=15) == 3  # a worker per small shard
    assert resolve_processes(4, shards=1, rows=10) == 1  # a small retry batch: no workers
    assert resolve_processes(4, shards=1, rows=2 * MIN_ROWS_PER_PROCESS) == 2  # one shard, in two ranges


@pytest.mark.parametrize("setting", [0, -1, 1.5, "2", "many", True, None])
def test_anything_but_auto_or_a_positive_whole_number_is_refused(setting):
    with pytest.raises(ValueError, match="reconcile_processes"):
        check_processes(setting)
