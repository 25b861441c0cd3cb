"""The one interface every destination implements: write a job's rows, idempotently."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.collect.result_table import BATCH_ROWS


class ResultSink(ABC):
    """
    A destination for a job's result rows (record batches of ``RESULT_SCHEMA``).

    ``write`` must be idempotent per job: writing the same job again (a retried or cleared task, a
    backfill) leaves exactly one row per (job, custom_id), never the old rows beside the new ones,
    and a failed write leaves the previous content in place.
    """

    #: Rows per batch given to ``write``: a file sink writes each as a row group, so large ones; a
    #: sink that re-encodes every row (a database's COPY) may ask for fewer, for less memory.
    read_rows: int = BATCH_ROWS

    @abstractmethod
    def write(self, job_id: str, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
        """Replace the job's rows with ``batches``; return where they went (small, JSON-safe)."""

    def write_summary(self, job_id: str, summary: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Store the job's summary beside its rows, where the destination has a place for it."""

    @abstractmethod
    def lineage(self, job_id: str) -> tuple[str, str]:
        """The OpenLineage dataset (namespace, name) the job's rows are written to."""


def of_job(job_id: str, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Pass the batches through, refusing rows of another job (replacing a job's rows relies on it)."""
    for batch in batches:
        if batch.num_rows and not pc.all(pc.equal(batch.column("job_id"), job_id)).as_py():
            other = pc.filter(batch.column("job_id"), pc.not_equal(batch.column("job_id"), job_id))[0]
            raise ValueError(f"rows of job {other.as_py()!r} were given to write job {job_id!r}")
        yield batch
