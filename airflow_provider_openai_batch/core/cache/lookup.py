"""Look a build's requests up in the cache with memory that grows with neither the job nor the cache.

The build hands over each request's key as it streams (:meth:`CacheLookup.add`); keys go to local
Arrow files partitioned by their top bits (``k64``). :meth:`CacheLookup.hits` then takes the
partitions a round at a time (about ``ROUND_KEYS`` requests each) and, since every part is sorted
by ``k64`` and its row groups carry min/max statistics, reads from each part only the row groups
whose range meets the round's: the key column first, the answer only where a key matched. Memory
is one round of request keys and one row group; each row group is read about once per build.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_provider_openai_batch.core.cache.keys import k64s
from airflow_provider_openai_batch.core.cache.store import ENTRY_SCHEMA, CacheError, Parts, listed, reading
from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

SPILL_BITS: Final = 6  # 64 spill files
ROUND_KEYS: Final = 1 << 15  # request keys joined at a time
FLUSH_ROWS: Final = 1 << 16  # keys buffered before they are spilled (a few MB)
_MAX_K64: Final = (1 << 63) - 1

_REQUESTS = pa.schema(
    [("k64", pa.int64()), ("key", pa.binary(32)), ("position", pa.int64()), ("custom_id", pa.string())]
)
# What a hit carries: the request it answers and the cached answer.
HIT_SCHEMA: Final = pa.schema(
    [
        pa.field("position", pa.int64()),
        pa.field("custom_id", pa.string()),
        *(ENTRY_SCHEMA.field(name) for name in ENTRY_SCHEMA.names if name not in ("k64", "key")),
    ]
)

# Columns whose values repeat across hits; the others (positions, ids, answers) are mostly
# unique, where trying a dictionary first cost a third of writing the hits. The results task
# reads the hits whole, so no statistics either.
_HIT_DICTIONARY: Final = ["endpoint", "source_job_id", "batch_id", "model", "finish_reason"]


def hits_writer(where: Any) -> pq.ParquetWriter:
    """A Parquet writer for a build's hits (``HIT_SCHEMA``), to a path or an open binary file."""
    return pq.ParquetWriter(where, HIT_SCHEMA, use_dictionary=_HIT_DICTIONARY, write_statistics=False)


@dataclass(frozen=True)
class _Group:
    part: str
    index: int
    low: int
    high: int


class CacheLookup:
    """The requests of one build, checked against the cache's parts once they have all been added.

    :param store: the cache: Parquet parts, or any :class:`AnswerSource` (a SQL table).
    :param max_age: seconds; older answers are not used (``None``: any age).
    :param round_keys: request keys joined at a time; ``flush_rows``: keys buffered before a spill
        (a test passes small ones to make many rounds and partitions of a few keys).
    """

    def __init__(
        self,
        store: Parts | AnswerSource,
        *,
        max_age: float | None = None,
        spill_dir: str | None = None,
        round_keys: int = ROUND_KEYS,
        flush_rows: int = FLUSH_ROWS,
    ) -> None:
        self.store = store
        self.max_age = max_age
        self._round_keys = round_keys
        self._flush_rows = flush_rows
        self.requests = 0
        self._folder = tempfile.mkdtemp(prefix="openai-batch-lookup-", dir=spill_dir)
        self._remove = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)
        self._buffer: tuple[list[bytes], list[int], list[str]] = ([], [], [])
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._counts: dict[int, int] = {}

    def add(self, keys: Sequence[bytes], custom_ids: Sequence[str], start: int) -> None:
        """The keys of requests at positions ``start``, ``start + 1``…"""
        keys_, positions, ids = self._buffer
        keys_.extend(keys)
        positions.extend(range(start, start + len(keys)))
        ids.extend(custom_ids)
        self.requests += len(keys)
        if len(keys_) >= self._flush_rows:
            self._flush()

    def hits(self) -> Iterator[pa.Table]:
        """Tables of ``HIT_SCHEMA``: each request with a usable answer, once (the newest answer)."""
        try:
            self._flush()
            for writer in self._writers.values():
                writer.close()
            store = self.store
            source = cast(AnswerSource, store) if hasattr(store, "matching") else PartsSource(cast(Parts, store))
            if source.empty():
                return
            cutoff = None if self.max_age is None else int((time.time() - self.max_age) * 1000)
            for numbers in self._rounds():
                with pool_that_returns_memory():
                    found = self._round(numbers, source, cutoff)
                if found is not None and found.num_rows:
                    yield found
        finally:
            self.close()

    def close(self) -> None:
        self._writers.clear()
        self._remove()

    # -- spill --------------------------------------------------------------------------------

    def _flush(self) -> None:
        keys, positions, ids = self._buffer
        if not keys:
            return
        with pool_that_returns_memory():
            hashes = pa.array(k64s(keys), pa.int64())
            batch = pa.RecordBatch.from_arrays(
                [hashes, pa.array(keys, pa.binary(32)), pa.array(positions, pa.int64()), pa.array(ids, pa.string())],
                schema=_REQUESTS,
            )
            partition = pc.shift_right(hashes, 63 - SPILL_BITS)
            order = pc.sort_indices(partition)
            batch, partition = batch.take(order), partition.take(order)
            offset = 0
            for item in pc.value_counts(partition).to_pylist():  # ascending: the partitions were sorted
                number, count = item["values"], item["counts"]
                self._writer(number).write_batch(batch.slice(offset, count))
                self._counts[number] = self._counts.get(number, 0) + count
                offset += count
        self._buffer = ([], [], [])

    def _writer(self, number: int) -> pa.ipc.RecordBatchStreamWriter:
        if number not in self._writers:
            self._writers[number] = pa.ipc.new_stream(os.path.join(self._folder, f"{number:02d}.arrows"), _REQUESTS)
        return self._writers[number]

    def _rounds(self) -> Iterator[list[int]]:
        """Consecutive partitions, about ``ROUND_KEYS`` keys a round."""
        numbers: list[int] = []
        size = 0
        for number in sorted(self._counts):
            if numbers and size + self._counts[number] > self._round_keys:
                yield numbers
                numbers, size = [], 0
            numbers.append(number)
            size += self._counts[number]
        if numbers:
            yield numbers

    # -- join ---------------------------------------------------------------------------------

    def _round(self, numbers: list[int], source: AnswerSource, cutoff: int | None) -> pa.Table | None:
        requests = pa.concat_tables(
            pa.ipc.open_stream(os.path.join(self._folder, f"{n:02d}.arrows")).read_all() for n in numbers
        )
        shift = 63 - SPILL_BITS
        low, high = numbers[0] << shift, ((numbers[-1] + 1) << shift) - 1
        matched = source.matching(requests, low, high, cutoff)
        if not matched:
            return None
        return _join(requests, _newest(pa.concat_tables(matched)))


class AnswerSource(Protocol):
    """Where a round of request keys finds its entries (``ENTRY_SCHEMA`` tables, any number per key)."""

    def empty(self) -> bool: ...

    def matching(self, requests: pa.Table, low: int, high: int, cutoff: int | None) -> list[pa.Table]: ...


class PartsSource:
    """Entries from Parquet parts: only the row groups whose key range meets the round's are read."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._groups = self._read_groups()

    def empty(self) -> bool:
        return not self._groups

    def _read_groups(self) -> list[_Group]:
        """Every row group of every part with its key range, from the parts' footers."""
        groups = []
        for name in listed(self.parts):
            with reading(self.parts, name) as part:
                if part is None:
                    continue
                if "k64" not in part.schema_arrow.names or "key" not in part.schema_arrow.names:
                    raise _unreadable(self.parts, name, "it is not a part of this cache (no k64/key columns)")
                for index in range(part.num_row_groups):
                    stats = part.metadata.row_group(index).column(0).statistics
                    has = stats is not None and stats.has_min_max
                    low, high = (stats.min, stats.max) if has else (0, _MAX_K64)
                    groups.append(_Group(name, index, low, high))
        return groups

    def matching(self, requests: pa.Table, low: int, high: int, cutoff: int | None) -> list[pa.Table]:
        wanted = pc.unique(requests.column("k64"))
        matched = []
        by_part: dict[str, list[int]] = {}
        for group in self._groups:
            if group.high >= low and group.low <= high:
                by_part.setdefault(group.part, []).append(group.index)
        for name, indices in by_part.items():
            with reading(self.parts, name) as part:
                if part is None:
                    continue
                for index in indices:  # one thread: Arrow's pool threads would each keep their own arena
                    keys = part.read_row_group(index, columns=["k64"], use_threads=False).column("k64")
                    mask = pc.is_in(keys, value_set=wanted)
                    if not pc.any(mask).as_py():
                        continue
                    rows = part.read_row_group(index, use_threads=False).filter(mask)
                    if cutoff is not None:
                        rows = rows.filter(pc.greater_equal(rows.column("cached_at").cast(pa.int64()), cutoff))
                    if rows.num_rows:
                        matched.append(rows.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA))
        return matched


def _newest(entries: pa.Table) -> pa.Table:
    """One entry per key: the most recently cached."""
    entries = entries.sort_by([("k64", "ascending"), ("cached_at", "descending")])
    column = entries.column("k64").combine_chunks()
    if len(column) > 1:
        first = pc.not_equal(column.slice(1), column.slice(0, len(column) - 1))
        entries = entries.filter(pa.concat_arrays([pa.array([True]), first]))
    return entries


def _join(requests: pa.Table, entries: pa.Table) -> pa.Table:
    """Each request with its entry, where the full keys agree (a shared k64 alone is not a match)."""
    at = pc.index_in(requests.column("k64"), value_set=entries.column("k64"))
    found = pc.is_valid(at)
    requests, at = requests.filter(found), at.filter(found)
    answers = entries.take(at)
    same = pc.equal(requests.column("key"), answers.column("key"))
    requests, answers = requests.filter(same), answers.filter(same)
    columns = {"position": requests.column("position"), "custom_id": requests.column("custom_id")}
    columns.update({name: answers.column(name) for name in HIT_SCHEMA.names if name not in columns})
    return pa.table(columns, schema=HIT_SCHEMA)


def _unreadable(parts: Parts, name: str, why: str) -> CacheError:
    return CacheError(f"answer cache part {name} under {parts.location} cannot be used: {why}")
