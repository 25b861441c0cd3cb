"""The result rows as Arrow record batches: one typed schema for Parquet, JSONL and SQL destinations.

Rows are turned into columns a batch at a time (``BATCH_ROWS``), so memory is bounded by the batch,
not by the job, and every destination reads the same typed columns.

The columns and their types are defined in ``core.collect.result_columns``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_provider_openai_batch.core.collect.result_columns import (
    RESULT_SCHEMA,
    SCHEMA_VERSION,
    TOKEN_FIELDS,
    UTC_TIMESTAMP,
    VALUE_FIELDS,
)
from airflow_provider_openai_batch.core.collect.results import Reconciler, ResultTotals

BATCH_ROWS = 65_536  # rows per batch read back from a results file
# Rows per reconciled batch (a row group of the attempt's stage): small enough that a few in flight
# stay a few MB and memory levels off within the first shard.
RECONCILE_ROWS = 16_384

# Rows carry epoch seconds; the schema's timestamps are milliseconds (Parquet has no seconds).
_UTC_SECONDS = pa.timestamp("s", tz="UTC")

_encode = msgspec.json.Encoder().encode
# The types rows are built with: the schema's, but epoch seconds for timestamps (cast afterwards).
_BUILD_SCHEMA = pa.schema([f.with_type(_UTC_SECONDS) if f.type == UTC_TIMESTAMP else f for f in RESULT_SCHEMA])
_VALUE_TYPES = [_BUILD_SCHEMA.field(name).type for name in VALUE_FIELDS]
_PARSED = VALUE_FIELDS.index("parsed")


def reconciled_batches(
    reconciler: Reconciler, *line_sources: Iterable[bytes], size: int = RECONCILE_ROWS, unanswered: bool = True
) -> Iterator[pa.RecordBatch]:
    """Reconcile lines straight into record batches of at most ``size`` rows, as they stream in.

    Each batch is counted into ``reconciler.counts`` as it is made.
    """
    pending: list[list[Any]] = [[] for _ in VALUE_FIELDS]
    for columns in reconciler.value_columns(*line_sources, unanswered=unanswered):
        if len(pending[0]) + len(columns[0]) < size:  # the usual case: the chunk fits whole
            for target, column in zip(pending, columns, strict=True):
                target.extend(column)
            continue
        start = 0
        while start < len(columns[0]):
            room = size - len(pending[0])
            for target, column in zip(pending, columns, strict=True):
                target.extend(column[start : start + room])
            start += room
            if len(pending[0]) >= size:
                yield count_batch(reconciler.counts, columns_to_batch(reconciler, pending))
                pending = [[] for _ in VALUE_FIELDS]
    if pending[0]:
        yield count_batch(reconciler.counts, columns_to_batch(reconciler, pending))


def columns_to_batch(reconciler: Reconciler, values: list[list[Any]]) -> pa.RecordBatch:
    """A record batch from value columns; the batch's own fields are repeated column-wise, not per row."""
    count = len(values[0])
    columns: dict[str, pa.Array] = {}
    for index, (name, kind) in enumerate(zip(VALUE_FIELDS, _VALUE_TYPES, strict=True)):
        column = values[index]
        if index == _PARSED and any(v is not None for v in column):
            column = [None if v is None else _encode(v).decode() for v in column]
        first = column[0]  # one value throughout (status, model, the unused columns…) repeats in C:
        if column[-1] == first and column.count(first) == count:
            columns[name] = pa.nulls(count, kind) if first is None else pa.repeat(pa.scalar(first, kind), count)
        else:
            columns[name] = pa.array(column, type=kind)
    columns["record_key"] = columns["custom_id"]
    for name, value in reconciler.batch_values().items():
        kind = _BUILD_SCHEMA.field(name).type
        columns[name] = pa.nulls(count, kind) if value is None else pa.repeat(pa.scalar(value, kind), count)
    batch = pa.RecordBatch.from_arrays([columns[name] for name in RESULT_SCHEMA.names], schema=_BUILD_SCHEMA)
    return batch.cast(RESULT_SCHEMA)


FORMATS = ("parquet", "jsonl")


class JsonlWriter:
    """Record batches as JSON lines: timestamps in ISO 8601, ``parsed`` as nested JSON (not a string)."""

    def __init__(self, handle: IO[bytes] | Any) -> None:
        self._handle = handle
        self._encode = msgspec.json.Encoder().encode

    def write_batch(self, batch: pa.RecordBatch) -> None:
        lines = []
        for row in batch.to_pylist():
            if row["parsed"] is not None:
                row["parsed"] = msgspec.Raw(row["parsed"].encode())
            lines.append(self._encode(row))
        if lines:
            self._handle.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        """Nothing to finish: each batch is complete lines (the caller owns the handle)."""


# Columns with few distinct values get dictionary pages; for the others (ids, answers) the attempt
# costs time and, once it falls back, space: zstd alone makes files a third smaller, faster.
_FEW_VALUES = ["job_id", "batch_id", "status", "error_code", "error_message", "model", "refusal", "finish_reason"]


def open_writer(handle: IO[bytes] | Any, fmt: str = "parquet") -> pq.ParquetWriter | JsonlWriter:
    """A writer with ``write_batch``/``close`` for ``fmt`` (``parquet``: zstd, a row group per batch)."""
    if fmt == "parquet":
        return pq.ParquetWriter(handle, RESULT_SCHEMA, compression="zstd", use_dictionary=_FEW_VALUES)
    if fmt == "jsonl":
        return JsonlWriter(handle)
    raise ValueError(f"unknown results format {fmt!r}; use one of {FORMATS}")


class BackgroundWriter:
    """
    Hands record batches to a writer on a helper thread, a couple at a time.

    Parquet encoding and compression release the GIL, so they run beside reconciliation on
    another core instead of after it; the bounded queue keeps memory flat.
    """

    def __init__(self, writer: Any, depth: int = 2) -> None:
        self._writer = writer
        self._queue: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="results-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._error is None and not self._stop:
                try:
                    self._writer.write_batch(batch)
                except BaseException as err:  # handed back to the producer on its next call
                    self._error = err

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(batch)

    def close(self) -> None:
        """Write what is queued, then close the writer (raising the writer's error, if any)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._writer.close()

    def abort(self) -> None:
        """Stop without writing what is queued (the handle is being thrown away)."""
        self._stop = True
        self._queue.put(None)
        self._thread.join()
        if getattr(self._writer, "is_open", False):
            # A ParquetWriter closes itself when collected, writing its footer into the abandoned handle.
            self._writer.is_open = False


@contextmanager
def batch_writer(handle: IO[bytes] | Any, fmt: str = "parquet") -> Iterator[Any]:
    """A writer for ``fmt`` on ``handle`` that writes on a helper thread; closed on success, abandoned on error."""
    writer = BackgroundWriter(open_writer(handle, fmt))
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


def write_batches(handle: IO[bytes] | Any, batches: Iterable[pa.RecordBatch], fmt: str = "parquet") -> int:
    """Write record batches to a binary handle in ``fmt``; returns the number of rows."""
    rows = 0
    with batch_writer(handle, fmt) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def format_of(path: str) -> str:
    """``parquet`` or ``jsonl`` from a file name's extension."""
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path!r}: name it .parquet or .jsonl")


def read_parquet(handle: IO[bytes] | Any, size: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """
    Stream the record batches of a results Parquet file, checking it has our schema.

    A row group at a time, on this thread: ``iter_batches`` over a whole file kept memory growing
    with it (+60 MB reading 1.2M staged rows, against +32 MB a row group at a time) and, with its
    reader threads, took longer on two cores.
    """
    parquet = pq.ParquetFile(handle)
    if not parquet.schema_arrow.equals(RESULT_SCHEMA, check_metadata=False):
        raise ValueError(f"not a results file of schema version {SCHEMA_VERSION}: {parquet.schema_arrow}")
    for group in range(parquet.num_row_groups):
        yield from parquet.read_row_group(group, use_threads=False).to_batches(max_chunksize=size)


def count_batch(totals: ResultTotals, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Add one batch's rows to ``totals``, column-wise (no per-row Python); the batch is handed back."""
    for item in pc.value_counts(batch.column("status")).to_pylist():
        totals.by_status[item["values"]] += item["counts"]
    for name in TOKEN_FIELDS:
        setattr(totals, name, getattr(totals, name) + (pc.sum(batch.column(name)).as_py() or 0))
    totals.cost_usd += pc.sum(batch.column("cost_usd")).as_py() or 0.0
    used = pc.or_(pc.greater(batch.column("input_tokens"), 0), pc.greater(batch.column("output_tokens"), 0))
    totals.unpriced_rows += pc.sum(pc.and_(used, pc.is_null(batch.column("cost_usd")))).as_py() or 0
    return batch


class TableCounts(ResultTotals):
    """The totals over a stream of record batches (delivery counts the final rows this way)."""

    def add(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return count_batch(self, batch)

    def counted(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield self.add(batch)
