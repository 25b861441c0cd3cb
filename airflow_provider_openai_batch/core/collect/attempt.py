"""One attempt of collecting a job: reconcile each shard's batch, keep the final rows, set retries aside.

A row is final when its attempt is the last allowed or its failure is not worth retrying; final
rows go to the attempt's stage (any writer with ``write_batch``), the others' request lines go to
the next attempt's retry shards. So every request has exactly one final row, in exactly one
attempt's stage, and the job's rows are the stages of all attempts put together.

Storage and the API are reached through callables, so the CLI runs this on local files and the
Airflow operator on ObjectStoragePath and the OpenAI hook.

Shards are independent, so given a :func:`reconcile_pool` they are reconciled in worker processes
(the work is CPU-bound Python; threads would share one core). A worker spools its shard's rows to
a local Arrow IPC file and hands back the path; this process streams the spools into the stage in
shard order, so the output is the same as a serial run and memory stays bounded by the few
shards in flight, not by the job.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.collect.result_table import RESULT_SCHEMA, reconciled_batches
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileCounts, Reconciler
from airflow_provider_openai_batch.core.collect.retries import Origins, RetryPolicy, RetryShardWriter, request_ids
from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.line_blocks import LineBlocks, file_lines
from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory


class BatchWriter(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...


@dataclass(frozen=True)
class ShardRun:
    """
    One shard's batch, as reconciliation needs it.

    :param outcome: the batch and how it ended.
    :param requests: opens the shard's request lines (called again when some are retried).
    :param results: opens the batch's output and error lines, one iterable per file.
    :param origins: input shard of each run of lines, for retry shards (``None``: ``outcome.shard``).
    :param done: called once the run is fully handled (e.g. to delete local copies of its files).

    With a :func:`reconcile_pool` the run is sent to a worker process, so ``requests`` and
    ``results`` must pickle and work there by themselves: :class:`FileLines` and
    :class:`FileLineSets` over local files do (``done`` stays in this process).
    """

    outcome: BatchOutcome
    requests: Callable[[], Iterable[bytes]]
    results: Callable[[], Sequence[Iterable[bytes]]]
    origins: Origins | None = None
    done: Callable[[], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class FileLines:
    """Opens the lines of a local file; picklable, so a worker process can open it by itself."""

    path: str

    def __call__(self) -> LineBlocks:
        return file_lines(self.path)


@dataclass(frozen=True)
class FileLineSets:
    """Opens the lines of several local files, one iterable per file (a batch's output and error files)."""

    paths: tuple[str, ...]

    def __call__(self) -> list[LineBlocks]:
        return [FileLines(path)() for path in self.paths]


@dataclass
class AttemptReport:
    """What one attempt produced: final rows staged, requests set aside, anomalies per batch."""

    attempt: int
    staged_rows: int = 0
    retried: int = 0
    counts: ReconcileCounts = field(default_factory=ReconcileCounts)
    anomalies: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Reconciled:
    """One run's reconciliation, as a worker hands it back (the rows themselves went to ``spool``)."""

    staged_rows: int
    retry_ids: set[str]
    expected: int
    counts: ReconcileCounts
    spool: str | None = None


def collect_attempt(
    runs: Iterable[ShardRun],
    attempt: int,
    stage: BatchWriter,
    *,
    policy: RetryPolicy | None = None,
    retries: RetryShardWriter | None = None,
    prices: PriceTable | None = None,
    pool: ReconcilePool | None = None,
) -> AttemptReport:
    """
    Reconcile every run of one attempt into ``stage``; retriable rows go to ``retries`` instead.

    Without ``retries`` (or with ``policy`` allowing no further attempt) every row is final.
    With a ``pool`` (see :func:`reconcile_pool`) shards are reconciled in its worker processes.
    """
    policy = policy or RetryPolicy(max_attempts=1)
    report = AttemptReport(attempt)
    last = retries is None or attempt >= policy.max_attempts
    if pool is not None:
        outcomes = _in_processes(runs, pool, attempt, last, policy, prices, stage)
    else:
        outcomes = ((run, _reconcile(run, attempt, last, policy, prices, stage.write_batch)) for run in runs)
    for run, reconciled in outcomes:
        report.staged_rows += reconciled.staged_rows
        if reconciled.retry_ids:
            assert retries is not None
            origins = run.origins or ((run.outcome.shard, reconciled.expected),)
            report.retried += retries.add(run.requests(), reconciled.retry_ids, origins)
        report.counts.merge(reconciled.counts)
        if reconciled.counts.anomalies:
            found = {name: getattr(reconciled.counts, name) for name in ReconcileCounts.ANOMALIES}
            report.anomalies.append({"batch_id": run.outcome.batch_id, **found})
        if run.done is not None:
            run.done()
    return report


def _reconcile(
    run: ShardRun,
    attempt: int,
    last: bool,
    policy: RetryPolicy,
    prices: PriceTable | None,
    write: Callable[[pa.RecordBatch], None],
) -> _Reconciled:
    """Reconcile one run, writing its final rows with ``write`` and keeping the ids to retry."""
    reconciler = Reconciler(run.outcome, request_ids(run.requests()), prices, run.origins)
    staged, retry_ids = 0, set()
    for batch in reconciled_batches(reconciler, *run.results()):
        final = batch
        if not last:
            mask = policy.retry_mask(batch, attempt)
            if pc.any(mask).as_py():
                retry_ids.update(batch.filter(mask).column("custom_id").to_pylist())
                final = batch.filter(pc.invert(mask))
        if final.num_rows:
            write(final)
            staged += final.num_rows
    return _Reconciled(staged, retry_ids, reconciler.expected, reconciler.counts)


class ReconcilePool(ProcessPoolExecutor):
    """Worker processes that reconcile shards side by side; see :func:`reconcile_pool`."""

    def __init__(self, processes: int) -> None:
        method = "fork" if sys.platform == "linux" else "spawn"
        super().__init__(max_workers=processes, mp_context=multiprocessing.get_context(method))
        self.processes = processes


@contextmanager
def reconcile_pool(processes: int) -> Iterator[ReconcilePool | None]:
    """
    Worker processes for :func:`collect_attempt`; ``None`` (reconcile in this process) for 1, or
    where this process may not have children.

    Open it before any thread of your own (such as a stage writer) starts: on Linux the workers
    are forked — no re-import of the host program (an Airflow task's is the whole of Airflow),
    which would cost more than the reconciliation it parallelises — and they are all started
    here, while this process is still single-threaded. Elsewhere they are spawned.
    """
    if processes <= 1 or multiprocessing.current_process().daemon:
        yield None  # a daemonic process (a Celery prefork child, say) may not start children
        return
    pool = ReconcilePool(processes)
    try:
        pool.submit(os.getpid).result()  # starts every worker now (all at once under fork)
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_processes(
    runs: Iterable[ShardRun],
    pool: ReconcilePool,
    attempt: int,
    last: bool,
    policy: RetryPolicy,
    prices: PriceTable | None,
    stage: BatchWriter,
) -> Iterator[tuple[ShardRun, _Reconciled]]:
    """Reconcile runs in the pool, a bounded window ahead; yield them in order, their spools staged."""
    spools = tempfile.mkdtemp(prefix="openai-batch-reconcile-")
    window: deque[tuple[ShardRun, Future[_Reconciled]]] = deque()
    ahead = 2 * pool.processes  # a run per worker in flight and one queued for each, so none waits
    try:
        for index, run in enumerate(runs):
            spool = os.path.join(spools, f"{index:06d}.arrows")
            job = replace(run, done=None)  # ``done`` belongs to this process (and need not pickle)
            window.append((run, pool.submit(_reconcile_to_spool, job, attempt, last, policy, prices, spool)))
            if len(window) > ahead:
                yield _staged(*window.popleft(), stage)
        while window:
            yield _staged(*window.popleft(), stage)
    finally:
        for _, future in window:
            future.cancel()
        shutil.rmtree(spools, ignore_errors=True)


def _staged(run: ShardRun, future: Future[_Reconciled], stage: BatchWriter) -> tuple[ShardRun, _Reconciled]:
    """Wait for a worker's run and stream its spooled rows into the stage."""
    reconciled = future.result()
    assert reconciled.spool is not None
    with pa.OSFile(reconciled.spool) as source, pa.ipc.open_stream(source) as reader:
        for batch in reader:
            stage.write_batch(batch)
    os.unlink(reconciled.spool)
    return run, reconciled


def _reconcile_to_spool(
    run: ShardRun, attempt: int, last: bool, policy: RetryPolicy, prices: PriceTable | None, spool: str
) -> _Reconciled:
    """In a worker process: reconcile one run into an Arrow IPC stream file."""
    with (
        pool_that_returns_memory(),  # a spawned worker starts with pyarrow's default
        pa.OSFile(spool, "wb") as sink,
        pa.ipc.new_stream(sink, RESULT_SCHEMA) as writer,
    ):
        reconciled = _reconcile(run, attempt, last, policy, prices, writer.write_batch)
    reconciled.spool = spool
    return reconciled
