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

A job of fewer shards than workers has each shard's result files cut into ranges of whole lines,
reconciled side by side: a range's reconciler knows the shard's ids but not what the other ranges
answer, so this process takes the ranges' rows in order and drops a row whose request an earlier
range already answered (a duplicate line, counted as one), then adds the rows of the requests no
range answered. Those are the rows a serial run writes, in its order: lines in file order, then
the unanswered requests by custom id.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.collect.result_table import RESULT_SCHEMA, count_batch, reconciled_batches
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileCounts, Reconciler
from airflow_provider_openai_batch.core.collect.retries import Origins, RetryPolicy, RetryShardWriter, request_ids
from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.line_blocks import (
    FileRange,
    LineBlocks,
    file_lines,
    file_range_lines,
    line_ranges,
)
from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

MIN_RANGE_BYTES = 4 << 20  # a shard's result files are cut into ranges of at least this many bytes


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


@dataclass(frozen=True)
class FileRanges:
    """Opens a range of whole lines of a batch's local result files, one iterable per file piece."""

    pieces: tuple[FileRange, ...]

    def __call__(self) -> list[LineBlocks]:
        return [file_range_lines(*piece) for piece in self.pieces]


@dataclass(frozen=True)
class BatchAnomalies:
    """Lines of one batch's output that were counted and not written."""

    batch_id: str
    duplicate_lines: int
    unknown_custom_ids: int
    unparseable_lines: int

    def describe(self) -> str:
        return (
            f"{self.duplicate_lines} duplicate line(s), {self.unknown_custom_ids} unknown custom_id(s), "
            f"{self.unparseable_lines} unparseable line(s)"
        )


@dataclass
class AttemptReport:
    """What one attempt produced: final rows staged, requests set aside, anomalies per batch."""

    attempt: int
    staged_rows: int = 0
    retried: int = 0
    counts: ReconcileCounts = field(default_factory=ReconcileCounts)
    anomalies: list[BatchAnomalies] = field(default_factory=list)


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
    shards: int | None = None,
    min_range_bytes: int | None = None,
) -> AttemptReport:
    """
    Reconcile every run of one attempt into ``stage``; retriable rows go to ``retries`` instead.

    Without ``retries`` (or with ``policy`` allowing no further attempt) every row is final.
    With a ``pool`` (see :func:`reconcile_pool`) shards are reconciled in its worker processes;
    with fewer ``shards`` (the number of runs, when ``runs`` has no length) than workers, ranges
    of each shard's local result files are too, in ranges of at least ``min_range_bytes``
    (default ``MIN_RANGE_BYTES``).
    """
    policy = policy or RetryPolicy(max_attempts=1)
    report = AttemptReport(attempt)
    last = retries is None or attempt >= policy.max_attempts
    job = _Job(attempt, last, policy, prices)
    if pool is not None:
        if shards is None:
            shards = len(runs) if isinstance(runs, Sized) else pool.processes
        parts = -(-pool.processes // max(shards, 1))  # ranges per shard, so every worker has one
        outcomes = _in_processes(runs, pool, job, stage, parts, min_range_bytes or MIN_RANGE_BYTES)
    else:
        outcomes = ((run, _reconcile(run, job, stage.write_batch)) for run in runs)
    for run, reconciled in outcomes:
        report.staged_rows += reconciled.staged_rows
        if reconciled.retry_ids:
            assert retries is not None
            origins = run.origins or ((run.outcome.shard, reconciled.expected),)
            report.retried += retries.add(run.requests(), reconciled.retry_ids, origins)
        report.counts.merge(reconciled.counts)
        if reconciled.counts.anomalies:
            found = {name: getattr(reconciled.counts, name) for name in ReconcileCounts.ANOMALIES}
            report.anomalies.append(BatchAnomalies(run.outcome.batch_id, **found))
        if run.done is not None:
            run.done()
    return report


@dataclass(frozen=True)
class _Job:
    """What every run of an attempt is reconciled with."""

    attempt: int
    last: bool
    policy: RetryPolicy
    prices: PriceTable | None


def _reconcile(run: ShardRun, job: _Job, write: Callable[[pa.RecordBatch], None]) -> _Reconciled:
    """Reconcile one run, writing its final rows with ``write`` and keeping the ids to retry."""
    reconciler = Reconciler(run.outcome, request_ids(run.requests()), job.prices, run.origins)
    reconciled = _Reconciled(0, set(), reconciler.expected, reconciler.counts)
    for batch in reconciled_batches(reconciler, *run.results()):
        _stage_final(batch, job, reconciled, write)
    return reconciled


def _stage_final(
    batch: pa.RecordBatch, job: _Job, reconciled: _Reconciled, write: Callable[[pa.RecordBatch], None]
) -> None:
    """Write a batch's final rows and keep the ids of those to retry."""
    final = batch
    if not job.last:
        mask = job.policy.retry_mask(batch, job.attempt)
        if pc.any(mask).as_py():
            reconciled.retry_ids.update(batch.filter(mask).column("custom_id").to_pylist())
            final = batch.filter(pc.invert(mask))
    if final.num_rows:
        write(final)
        reconciled.staged_rows += final.num_rows


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
    runs: Iterable[ShardRun], pool: ReconcilePool, job: _Job, stage: BatchWriter, parts: int, min_bytes: int
) -> Iterator[tuple[ShardRun, _Reconciled]]:
    """Reconcile runs in the pool, a bounded window ahead; yield them in order, their spools staged."""
    spools = tempfile.mkdtemp(prefix="openai-batch-reconcile-")
    window: deque[_InFlight] = deque()
    ahead = 2 * pool.processes  # a piece per worker in flight and one queued for each, so none waits
    try:
        for index, run in enumerate(runs):
            spool = os.path.join(spools, f"{index:06d}")
            window.append(_InFlight.submit(pool, run, job, spool, parts, min_bytes))
            while sum(len(flight.futures) for flight in window) > ahead:
                yield window.popleft().staged(stage)
        while window:
            yield window.popleft().staged(stage)
    finally:
        for flight in window:
            for future in flight.futures:
                future.cancel()
        shutil.rmtree(spools, ignore_errors=True)


@dataclass
class _InFlight:
    """A run handed to the pool: whole, or as ranges of its result files (``collected_at`` set)."""

    run: ShardRun
    job: _Job
    futures: list[Future[_Reconciled]]
    collected_at: int | None = None

    @classmethod
    def submit(cls, pool: ReconcilePool, run: ShardRun, job: _Job, spool: str, parts: int, min_bytes: int) -> _InFlight:
        work = replace(run, done=None)  # ``done`` belongs to this process (and need not pickle)
        ranges = _ranges(run, parts, min_bytes)
        if len(ranges) < 2:
            return cls(run, job, [pool.submit(_reconcile_to_spool, work, job, f"{spool}.arrows")])
        collected_at = int(time.time())
        futures = [
            pool.submit(
                _reconcile_range_to_spool, replace(work, results=part), job, f"{spool}-{n:03d}.arrows", collected_at
            )
            for n, part in enumerate(ranges)
        ]
        return cls(run, job, futures, collected_at)

    def staged(self, stage: BatchWriter) -> tuple[ShardRun, _Reconciled]:
        """Wait for the run's pieces and stream their spooled rows into the stage."""
        if self.collected_at is None:
            reconciled = self.futures[0].result()
            for batch in _spooled(reconciled):
                stage.write_batch(batch)
            return self.run, reconciled
        return self.run, self._merged(stage)

    def _merged(self, stage: BatchWriter) -> _Reconciled:
        """The ranges' rows in order, less those of requests an earlier range answered; then the unanswered."""
        run, job = self.run, self.job
        reconciler = Reconciler(run.outcome, request_ids(run.requests()), job.prices, run.origins, self.collected_at)
        counts, pending = reconciler.counts, reconciler.pending
        reconciled = _Reconciled(0, set(), reconciler.expected, counts)
        for future in self.futures:
            part = future.result()
            for name in ReconcileCounts.ANOMALIES:  # the ranges' rows are counted here, as they are kept
                setattr(counts, name, getattr(counts, name) + getattr(part.counts, name))
            for batch in _spooled(part):
                ids = batch.column("custom_id").to_pylist()
                fresh = [custom_id in pending for custom_id in ids]
                if not all(fresh):
                    counts.duplicate_lines += fresh.count(False)
                    batch = batch.filter(pa.array(fresh))
                    ids = batch.column("custom_id").to_pylist()
                pending.difference_update(ids)
                count_batch(counts, batch)
                reconciler.rows += batch.num_rows
                _stage_final(batch, job, reconciled, stage.write_batch)
        for batch in reconciled_batches(reconciler):  # no lines left: the unanswered rows, and the check
            _stage_final(batch, job, reconciled, stage.write_batch)
        return reconciled


def _ranges(run: ShardRun, parts: int, min_bytes: int) -> list[FileRanges]:
    """Ranges of the run's local result files, at most ``parts`` and none under ``min_bytes``."""
    if parts < 2 or not isinstance(run.results, FileLineSets):
        return []
    size = sum(os.path.getsize(path) for path in run.results.paths)
    parts = min(parts, size // min_bytes)
    return [FileRanges(pieces) for pieces in line_ranges(run.results.paths, parts)] if parts >= 2 else []


def _spooled(reconciled: _Reconciled) -> Iterator[pa.RecordBatch]:
    """The record batches of a worker's spool, which is removed once read."""
    assert reconciled.spool is not None
    with pa.OSFile(reconciled.spool) as source, pa.ipc.open_stream(source) as reader:
        yield from reader
    os.unlink(reconciled.spool)


def _reconcile_to_spool(run: ShardRun, job: _Job, spool: str) -> _Reconciled:
    """In a worker process: reconcile one run into an Arrow IPC stream file."""
    with _spool_writer(spool) as writer:
        reconciled = _reconcile(run, job, writer.write_batch)
    reconciled.spool = spool
    return reconciled


def _reconcile_range_to_spool(run: ShardRun, job: _Job, spool: str, collected_at: int) -> _Reconciled:
    """
    In a worker process: reconcile a range of a run's result lines into an Arrow IPC stream file.

    Every row is spooled, retriable or not: which rows are final is decided once the ranges are
    merged. Only the anomalies are counted here; the rows are counted as they are kept.
    """
    reconciler = Reconciler(run.outcome, request_ids(run.requests()), job.prices, run.origins, collected_at)
    rows = 0
    with _spool_writer(spool) as writer:
        for batch in reconciled_batches(reconciler, *run.results(), unanswered=False):
            writer.write_batch(batch)
            rows += batch.num_rows
    anomalies = ReconcileCounts(**{name: getattr(reconciler.counts, name) for name in ReconcileCounts.ANOMALIES})
    return _Reconciled(rows, set(), reconciler.expected, anomalies, spool)


@contextmanager
def _spool_writer(spool: str) -> Iterator[pa.ipc.RecordBatchStreamWriter]:
    with (
        pool_that_returns_memory(),  # a spawned worker starts with pyarrow's default
        pa.OSFile(spool, "wb") as sink,
        pa.ipc.new_stream(sink, RESULT_SCHEMA) as writer,
    ):
        yield writer
