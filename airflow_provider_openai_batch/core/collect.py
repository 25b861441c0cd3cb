"""One attempt of collecting a job: reconcile each shard's batch, keep the final rows, set retries aside.

A row is final when its attempt is the last allowed or its failure is not worth retrying; final
rows go to the attempt's stage (any writer with ``write_batch``), the others' request lines go to
the next attempt's retry shards. So every request has exactly one final row, in exactly one
attempt's stage, and the job's rows are the stages of all attempts put together.

Storage and the API are reached through callables, so the CLI runs this on local files and the
Airflow operator on ObjectStoragePath and the OpenAI hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.result_table import reconciled_batches
from airflow_provider_openai_batch.core.results import BatchOutcome, ReconcileCounts, Reconciler
from airflow_provider_openai_batch.core.retries import Origins, RetryPolicy, RetryShardWriter, request_ids


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
    """

    outcome: BatchOutcome
    requests: Callable[[], Iterable[bytes]]
    results: Callable[[], Sequence[Iterable[bytes]]]
    origins: Origins | None = None


@dataclass
class AttemptReport:
    """What one attempt produced: final rows staged, requests set aside, anomalies per batch."""

    attempt: int
    staged_rows: int = 0
    retried: int = 0
    counts: ReconcileCounts = field(default_factory=ReconcileCounts)
    anomalies: list[dict[str, Any]] = field(default_factory=list)


def collect_attempt(
    runs: Iterable[ShardRun],
    attempt: int,
    stage: BatchWriter,
    *,
    policy: RetryPolicy | None = None,
    retries: RetryShardWriter | None = None,
    prices: PriceTable | None = None,
) -> AttemptReport:
    """
    Reconcile every run of one attempt into ``stage``; retriable rows go to ``retries`` instead.

    Without ``retries`` (or with ``policy`` allowing no further attempt) every row is final.
    """
    policy = policy or RetryPolicy(max_attempts=1)
    report = AttemptReport(attempt)
    last = retries is None or attempt >= policy.max_attempts
    for run in runs:
        reconciler = Reconciler(run.outcome, request_ids(run.requests()), prices, run.origins)
        retry_ids: set[str] = set()
        for batch in reconciled_batches(reconciler, *run.results()):
            final = batch
            if not last:
                mask = policy.retry_mask(batch, attempt)
                if pc.any(mask).as_py():
                    retry_ids.update(batch.filter(mask).column("custom_id").to_pylist())
                    final = batch.filter(pc.invert(mask))
            if final.num_rows:
                stage.write_batch(final)
                report.staged_rows += final.num_rows
        if retry_ids:
            assert retries is not None
            origins = run.origins or ((run.outcome.shard, reconciler.expected),)
            report.retried += retries.add(run.requests(), retry_ids, origins)
        report.counts.merge(reconciler.counts)
        if reconciler.counts.anomalies:
            found = {name: getattr(reconciler.counts, name) for name in ReconcileCounts.ANOMALIES}
            report.anomalies.append({"batch_id": run.outcome.batch_id, **found})
    return report
