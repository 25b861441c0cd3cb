"""The cache's store: immutable Parquet parts under one prefix, each sorted by key, written whole or not at all.

Every writer (a results task) adds one new part under a unique name, so two runs writing at once
never touch each other's files, and a part appears only when complete (the ``Parts`` backend
writes under a temporary name and renames, or publishes the upload on close); readers list
finished parts only. An answer may be in several parts (two runs answered it): readers keep the
newest. Eviction rewrites a part without the evicted entries under a new name, then removes the
old one, so a reader sees the entries before or after it, twice at worst, never none.

Storage comes in as a :class:`Parts` object (``hooks/storage.py`` gives one over any
``ObjectStoragePath``; :class:`LocalParts` is a plain directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Final, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_provider_openai_batch.core.errors import OpenAIBatchError
from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

PART_SUFFIX: Final = ".parquet"
ROW_GROUP: Final = 16_384  # rows per row group: what a lookup reads at a time
PARTITION_BITS: Final = 4  # the writer sorts 1/16 of a run's answers at a time
_TIME = pa.timestamp("ms", tz="UTC")

# The answer's columns carry the result row's names and types (a test holds them to it); the rest
# say which request, where from, and when.
ANSWER_FIELDS: Final = (
    pa.field("shard", pa.int32()),
    pa.field("batch_id", pa.string()),
    pa.field("attempt", pa.int32()),
    pa.field("http_status", pa.int32()),
    pa.field("model", pa.string()),
    pa.field("content", pa.string()),
    pa.field("refusal", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("parsed", pa.string()),
    pa.field("embedding", pa.list_(pa.float32())),
    pa.field("input_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),
    pa.field("reasoning_tokens", pa.int64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("request_id", pa.string()),
    pa.field("responded_at", _TIME),
    pa.field("batch_created_at", _TIME),
    pa.field("batch_ended_at", _TIME),
)
ENTRY_SCHEMA: Final = pa.schema(
    [
        pa.field("k64", pa.int64(), nullable=False),
        pa.field("key", pa.binary(32), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("cached_at", _TIME, nullable=False),
        pa.field("source_job_id", pa.string()),
        pa.field("source_custom_id", pa.string()),
        *ANSWER_FIELDS,
    ],
    metadata={"openai_batch.cache_version": "1"},
)
ANSWER_NAMES: Final = tuple(f.name for f in ANSWER_FIELDS)


class CacheError(OpenAIBatchError, RuntimeError):
    """The cache cannot be read or written; the message names where."""


class Parts(Protocol):
    """Where the parts live: list the finished ones, read one, write one atomically, remove one."""

    location: str

    def names(self) -> list[str]: ...

    def open_read(self, name: str) -> AbstractContextManager[Any]: ...

    def open_write(self, name: str) -> AbstractContextManager[IO[bytes]]: ...

    def remove(self, name: str) -> None: ...


class LocalParts:
    """Parts in a local directory (the CLI on a local cache, tests); temp files are dot-names."""

    def __init__(self, folder: str) -> None:
        self.location = folder

    def names(self) -> list[str]:
        if not os.path.isdir(self.location):
            return []
        return sorted(n for n in os.listdir(self.location) if is_part(n))

    def open_read(self, name: str) -> AbstractContextManager[Any]:
        return pa.OSFile(os.path.join(self.location, name))  # read by Arrow itself, not through Python

    @contextmanager
    def open_write(self, name: str) -> Iterator[IO[bytes]]:
        os.makedirs(self.location, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=self.location)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.replace(temp, os.path.join(self.location, name))
        except BaseException:
            os.unlink(temp)
            raise

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.location, name))


def is_part(name: str) -> bool:
    """A finished part's name: never a writer's temporary file (dot-names, ``.partial``)."""
    return name.endswith(PART_SUFFIX) and not name.startswith((".", "_"))


def new_part_name(now: float | None = None) -> str:
    """Unique, and in time order: ``<epoch ms>-<random>.parquet``."""
    return f"{int((now or time.time()) * 1000):013d}-{uuid.uuid4().hex[:12]}{PART_SUFFIX}"


@contextmanager
def reading(parts: Parts, name: str) -> Iterator[pq.ParquetFile | None]:
    """One part opened for reading; ``None`` when it went away (evicted since it was listed)."""
    try:
        with parts.open_read(name) as handle:
            yield pq.ParquetFile(handle)
    except FileNotFoundError:
        yield None
    except CacheError:
        raise
    except Exception as err:
        raise CacheError(
            f"answer cache part {name} under {parts.location} cannot be read: {type(err).__name__}: {err}"
        ) from err


def listed(parts: Parts) -> list[str]:
    try:
        return parts.names()
    except Exception as err:
        raise CacheError(f"answer cache {parts.location} cannot be listed: {type(err).__name__}: {err}") from err


class EntryWriter:
    """A run's new answers, spilled to local disk by key partition, written as one sorted part on commit.

    Memory is one record batch while adding, and one partition (1/16 of the run's answers) while
    committing; an answer added twice in a run is kept once.
    """

    def __init__(self, parts: Parts, *, spill_dir: str | None = None) -> None:
        self.parts = parts
        self.added = 0
        self._folder = tempfile.mkdtemp(prefix="openai-batch-answers-", dir=spill_dir)
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        """Entries in ``ENTRY_SCHEMA`` (any order)."""
        if not batch.num_rows:
            return
        batch = batch.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA)
        partition = pc.shift_right(batch.column("k64"), 63 - PARTITION_BITS)
        for number in pc.unique(partition).to_pylist():
            self._writer(number).write_batch(batch.filter(pc.equal(partition, number)))
        self.added += batch.num_rows

    def commit(self) -> str | None:
        """Write the part (sorted by key); its name, or ``None`` when nothing was added."""
        try:
            for writer in self._writers.values():
                writer.close()
            if not self.added:
                return None
            name = new_part_name()
            try:
                with self.parts.open_write(name) as handle, pq.ParquetWriter(handle, ENTRY_SCHEMA) as out:
                    for number in sorted(self._writers):
                        with pool_that_returns_memory():
                            table = pa.ipc.open_stream(self._path(number)).read_all()
                            out.write_table(_sorted_unique(table), row_group_size=ROW_GROUP)
            except Exception as err:
                where = self.parts.location
                raise CacheError(
                    f"answer cache {where}: the new part could not be written: {type(err).__name__}: {err}"
                ) from err
            return name
        finally:
            self.discard()

    def discard(self) -> None:
        self._writers.clear()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _writer(self, number: int) -> pa.ipc.RecordBatchStreamWriter:
        if number not in self._writers:
            self._writers[number] = pa.ipc.new_stream(self._path(number), ENTRY_SCHEMA)
        return self._writers[number]

    def _path(self, number: int) -> str:
        return os.path.join(self._folder, f"{number:02d}.arrows")


def _sorted_unique(table: pa.Table) -> pa.Table:
    """Sorted by key; of entries with the same key, the last added is kept."""
    table = table.append_column("_order", pa.array(range(table.num_rows), pa.int64()))
    table = table.sort_by([("k64", "ascending"), ("key", "ascending"), ("_order", "descending")])
    keys = table.column("key").combine_chunks()
    if len(keys) > 1:
        first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
        table = table.filter(pa.concat_arrays([pa.array([True]), first]))
    return table.drop_columns(["_order"])


@dataclass
class CacheStats:
    """What a cache holds: parts, entries by model, ages, and the dollars its answers cost once."""

    parts: int = 0
    entries: int = 0
    bytes: int = 0
    oldest: float | None = None
    newest: float | None = None
    cost_usd: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parts": self.parts,
            "entries": self.entries,
            "bytes": self.bytes,
            "oldest": self.oldest,
            "newest": self.newest,
            "cost_usd": round(self.cost_usd, 6),
            "by_model": dict(sorted(self.by_model.items())),
        }


_STAT_COLUMNS = ["model", "cached_at", "cost_usd"]


def cache_stats(parts: Parts) -> CacheStats:
    """Count the entries part by part (a row group at a time); entries repeated across parts count each time."""
    stats = CacheStats()
    for name in listed(parts):
        with reading(parts, name) as part:
            if part is None:
                continue
            stats.parts += 1
            stats.bytes += part.metadata.serialized_size + sum(
                part.metadata.row_group(i).total_byte_size for i in range(part.num_row_groups)
            )
            for index in range(part.num_row_groups):
                group = part.read_row_group(index, columns=_STAT_COLUMNS)
                stats.entries += group.num_rows
                stats.cost_usd += pc.sum(group.column("cost_usd")).as_py() or 0.0
                times = pc.min_max(group.column("cached_at").cast(pa.int64()))
                low, high = times["min"].as_py() / 1000, times["max"].as_py() / 1000
                stats.oldest = low if stats.oldest is None else min(stats.oldest, low)
                stats.newest = high if stats.newest is None else max(stats.newest, high)
                for item in pc.value_counts(group.column("model").fill_null("")).to_pylist():
                    model = item["values"] or "(none)"
                    stats.by_model[model] = stats.by_model.get(model, 0) + item["counts"]
    return stats


def evict(parts: Parts, *, model: str | None = None, older_than: float | None = None) -> int:
    """Remove the entries of ``model`` and/or cached before ``older_than`` (epoch seconds); how many.

    With both, an entry goes when it matches either. A part that loses entries is written again
    without them under a new name before the old one is removed.
    """
    if model is None and older_than is None:
        raise ValueError("say what to evict: a model, an age, or both")

    def doomed(table: pa.Table) -> pa.Array:
        masks = []
        if model is not None:
            masks.append(pc.fill_null(pc.equal(table.column("model"), model), False))
        if older_than is not None:
            cutoff = pa.scalar(int(older_than * 1000), pa.int64())
            masks.append(pc.less(table.column("cached_at").cast(pa.int64()), cutoff))
        mask = masks[0] if len(masks) == 1 else pc.or_(masks[0], masks[1])
        return mask

    return _rewrite(parts, doomed)


def _rewrite(parts: Parts, doomed: Callable[[pa.Table], pa.Array]) -> int:
    removed = 0
    for name in listed(parts):
        with reading(parts, name) as part:
            if part is None:
                continue
            gone = sum(
                pc.sum(doomed(part.read_row_group(i, columns=["model", "cached_at"]))).as_py() or 0
                for i in range(part.num_row_groups)
            )
            if not gone:
                continue
            if gone < part.metadata.num_rows:
                with parts.open_write(new_part_name()) as handle, pq.ParquetWriter(handle, ENTRY_SCHEMA) as out:
                    for index in range(part.num_row_groups):
                        group = part.read_row_group(index)
                        group = group.filter(pc.invert(doomed(group)))
                        out.write_table(group.cast(ENTRY_SCHEMA), row_group_size=ROW_GROUP)
        parts.remove(name)
        removed += gone
    return removed
