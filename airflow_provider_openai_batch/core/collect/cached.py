"""The answer cache seen from the results: cached answers become rows; fresh succeeded answers become entries.

A cached row is the row the answer had when it was bought — same batch and request ids, tokens,
timestamps — with this job's id, ``cached`` true and ``cost_usd`` 0 (this run paid nothing). Only
``succeeded`` rows are added to the cache: a failed, expired, cancelled or missing request, and an
answer that is not the JSON a structured output asked for (``invalid_output``), never are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.cache.keys import k64, keyed_lines
from airflow_provider_openai_batch.core.cache.store import ANSWER_NAMES, ENTRY_SCHEMA, EntryWriter
from airflow_provider_openai_batch.core.collect.result_columns import RESULT_SCHEMA
from airflow_provider_openai_batch.core.line_blocks import line_lists

_KEY_CHUNK = 256


def cached_rows(
    hits: Iterable[pa.RecordBatch], job_id: str, collected_at: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Result rows (``RESULT_SCHEMA``) for the requests the cache answered (``HIT_SCHEMA`` batches)."""
    now = int(time.time()) if collected_at is None else collected_at
    for batch in hits:
        count = batch.num_rows
        if not count:
            continue
        given = {name: batch.column(name) for name in batch.schema.names}
        constant = {
            "job_id": job_id,
            "record_key": None,
            "status": "succeeded",
            "cost_usd": 0.0,
            "collected_at": now * 1000,
            "cached": True,
        }
        columns = []
        for field in RESULT_SCHEMA:
            if field.name == "record_key":
                columns.append(given["custom_id"])
            elif field.name in constant:
                kind = pa.int64() if field.name == "collected_at" else field.type
                columns.append(pa.repeat(pa.scalar(constant[field.name], kind), count).cast(field.type))
            elif field.name in given:
                columns.append(given[field.name].cast(field.type))
            else:
                columns.append(pa.nulls(count, field.type))
        yield pa.RecordBatch.from_arrays(columns, schema=RESULT_SCHEMA)


class StageWriter(Protocol):
    def write_batch(self, batch: pa.RecordBatch) -> None: ...


_KEPT = ["custom_id", "job_id", *ANSWER_NAMES]


class AnswerTee:
    """Passes rows on to the stage, and keeps a run's succeeded rows until :meth:`run_done` keys them.

    A run is one shard's batch, so what is kept is bounded by a shard; keys come from the run's
    own request lines (``core.cache.keys``), the same keys the build looks up.
    """

    def __init__(self, stage: StageWriter, entries: EntryWriter, endpoint: str) -> None:
        self.stage = stage
        self.entries = entries
        self.endpoint = endpoint
        self._pending: list[pa.RecordBatch] = []

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.stage.write_batch(batch)
        kept = batch.filter(pc.equal(batch.column("status"), "succeeded"))
        if kept.num_rows:
            self._pending.append(kept.select(_KEPT))

    def run_done(self, requests: Iterable[bytes]) -> None:
        """Add the kept rows to the cache, keyed by their requests (``requests``: the run's lines)."""
        if not self._pending:
            return
        wanted = set()
        for batch in self._pending:
            wanted.update(batch.column("custom_id").to_pylist())
        keys: dict[str, bytes] = {}
        for chunk in line_lists(requests, _KEY_CHUNK):
            for custom_id, key in zip(*keyed_lines(chunk), strict=True):
                if custom_id in wanted:
                    keys[custom_id] = key
        now = int(time.time() * 1000)
        for batch in self._pending:
            ids = batch.column("custom_id").to_pylist()
            found = [keys.get(custom_id) for custom_id in ids]
            known = [key for key in found if key is not None]
            if len(known) < len(found):  # a row whose request line is gone: never cache what cannot be keyed
                batch = batch.filter(pa.array([key is not None for key in found]))
            self.entries.add(_entries(batch, known, self.endpoint, now))
        self._pending = []


def _entries(batch: pa.RecordBatch, keys: list[bytes], endpoint: str, now: int) -> pa.RecordBatch:
    count = batch.num_rows
    columns = {
        "k64": pa.array([k64(key) for key in keys], pa.int64()),
        "key": pa.array(keys, pa.binary(32)),
        "endpoint": pa.repeat(pa.scalar(endpoint, pa.string()), count),
        "cached_at": pa.repeat(pa.scalar(now, pa.int64()), count).cast(ENTRY_SCHEMA.field("cached_at").type),
        "source_job_id": batch.column("job_id"),
        "source_custom_id": batch.column("custom_id"),
        **{name: batch.column(name) for name in ANSWER_NAMES},
    }
    return pa.RecordBatch.from_arrays(
        [columns[name].cast(ENTRY_SCHEMA.field(name).type) for name in ENTRY_SCHEMA.names], schema=ENTRY_SCHEMA
    )
