"""Catch repeated custom_ids across a whole job with memory that does not grow with the job.

A job may hold tens of millions of ids; a set of them all (as 64-bit hashes, ~70 bytes each)
would grow with it. Two bounded ways, which a caller may combine:

- a *window*: a set of at most ``window`` ids in memory, so a repeat inside it is caught at once,
  where the caller can still name the record (the request builder, which keeps only this). When
  the window fills it is emptied and a new *generation* starts.
- a *spill*: every id recorded — hash, position, id and generation, 16k at a time — goes to
  local Arrow IPC files partitioned by hash, and :meth:`SeenIds.finish` reads them back one
  partition at a time to find the repeats no window saw. Validation keeps only this
  (``window=0``): it reports at the end anyway, and a set checked per chunk cost a tenth of it.

Memory is the window, the 16k buffer and one partition; disk is ~(20 + id length) bytes per id.
A job whose window held every id never reads the spill, and one under 16k ids never writes it
(its repeats are found in the buffer).

Hashes are Python's keyed SipHash of the string: within the window two different ids that
collide (odds n²/2⁶⁵, 4e-8 for 1.2M ids) count as a repeat; in the spill the ids themselves are
compared, so a collision there is never reported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

WINDOW: Final = 1 << 16
FLUSH_ROWS: Final = 1 << 14
PARTITIONS: Final = 64
_FILE_BUFFER: Final = 1 << 14

_SCHEMA = pa.schema([("hash", pa.int64()), ("position", pa.int64()), ("id", pa.string()), ("generation", pa.int32())])


@dataclass(frozen=True)
class Repeat:
    """A copy of an id seen earlier in another window: where it is, and where the first copy was."""

    position: int
    custom_id: str
    first_position: int


class SeenIds:
    """
    The custom_ids of a job so far; :meth:`add` and :meth:`add_all` say whether an id repeats one
    in the window, :meth:`finish` finds the repeats across windows.

    :param window: ids held in memory for the immediate check (0: none, every repeat is found by
        :meth:`finish`, which needs ``spill``).
    :param spill: keep every id on disk for :meth:`finish` (off: only the window is checked, for a
        caller whose output is validated again as a whole, like the request builder).
    :param spill_dir: where the spill directory is made (default: the system's temporary directory).
    :param flush_rows: ids buffered before they are written to the spill (a big job spills every
        ``FLUSH_ROWS``; a test passes a few to make a spill of many partitions).
    """

    def __init__(
        self, window: int = WINDOW, *, spill: bool = True, spill_dir: str | None = None, flush_rows: int = FLUSH_ROWS
    ) -> None:
        if window <= 0 and not spill:
            raise ValueError("with no window, only the spill can find repeats: keep spill=True")
        self.window = window
        self.spill = spill
        self._spill_dir = spill_dir
        self._flush_rows = flush_rows
        self._hashes: set[int] = set()
        self._generation = 0
        self._buffer: tuple[list[int], list[int], list[str]] = ([], [], [])
        self._spill: _Spill | None = None

    def add(self, custom_id: str, position: int) -> bool:
        """Record one id; False (not recorded) when it repeats an id of the window."""
        hashed = hash(custom_id)
        if self.window:
            if hashed in self._hashes:
                return False
            self._hashes.add(hashed)
        self._recorded([hashed], [position], [custom_id])
        return True

    def add_all(self, custom_ids: list[str], start: int) -> bool:
        """Record ids at positions ``start``, ``start + 1``…; False (none recorded) if any repeats."""
        hashes = list(map(hash, custom_ids))
        if not self.window:
            self._recorded(hashes, range(start, start + len(hashes)), custom_ids)
            return True
        fresh = self._fresh(hashes)
        if fresh is None:
            return False
        self._hashes |= fresh
        self._recorded(hashes, range(start, start + len(hashes)), custom_ids)
        return True

    def fresh(self, custom_ids: list[str]) -> set[int] | None:
        """The ids' hashes when none repeats (nothing recorded yet: see :meth:`record`), else None."""
        return self._fresh(list(map(hash, custom_ids)))

    def record(self, custom_ids: list[str], start: int, fresh: set[int]) -> None:
        """Record ids that :meth:`fresh` passed (for a caller with more to check in between)."""
        self._hashes |= fresh
        hashes = list(map(hash, custom_ids)) if self.spill else []
        self._recorded(hashes, range(start, start + len(custom_ids)), custom_ids)

    def _fresh(self, hashes: list[int]) -> set[int] | None:
        fresh = set(hashes)
        if len(fresh) != len(hashes) or not self._hashes.isdisjoint(fresh):
            return None
        return fresh

    def finish(self) -> Iterator[Repeat]:
        """The repeats no window saw, partition by partition (each in position order); then forget all.

        Each is a later copy; the first copy of an id is never one."""
        try:
            if not self.spill or (self.window and self._generation == 0):  # no spill, or one window held all
                return
            if self._spill is None:  # under FLUSH_ROWS ids: all are still in the buffer
                hashes, positions, custom_ids = self._buffer
                if not hashes:
                    return
                with pool_that_returns_memory():
                    found = list(_repeats(pa.table({"hash": hashes, "position": positions, "id": custom_ids})))
                yield from found
                return
            self._flush()
            assert self._spill is not None
            for number in self._spill.finished():
                with pool_that_returns_memory():  # one partition at a time, not held across a yield
                    found = list(_repeats(self._spill.read(number)))
                yield from found
        finally:
            self.close()

    def close(self) -> None:
        """Drop the window and the spill."""
        self._hashes = set()
        self._buffer = ([], [], [])
        if self._spill is not None:
            self._spill.remove()
            self._spill = None

    def _recorded(self, hashes: list[int], positions: Iterable[int], custom_ids: list[str]) -> None:
        """Spill what was added (when spilling); start a new window once this one is full."""
        if self.spill:
            buffer = self._buffer
            buffer[0].extend(hashes)
            buffer[1].extend(positions)
            buffer[2].extend(custom_ids)
            if len(buffer[0]) >= self._flush_rows:
                self._flush()
        if self.window and len(self._hashes) >= self.window:
            self._flush()  # the rows of this generation go out with its number
            self._hashes = set()
            self._generation += 1

    def _flush(self) -> None:
        hashes, positions, custom_ids = self._buffer
        if not hashes:
            return
        if self._spill is None:
            self._spill = _Spill(tempfile.mkdtemp(prefix="openai-batch-ids-", dir=self._spill_dir))
        with pool_that_returns_memory():  # freed at once, not kept growing by pyarrow's default pool
            generation = pa.repeat(pa.scalar(self._generation, pa.int32()), len(hashes))
            columns = [pa.array(hashes, pa.int64()), pa.array(positions, pa.int64()), pa.array(custom_ids, pa.string())]
            self._spill.write(pa.RecordBatch.from_arrays([*columns, generation], schema=_SCHEMA))
        self._buffer = ([], [], [])


class _Spill:
    """Arrow IPC stream files, one per hash partition, appended a record batch at a time."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._writers: dict[int, tuple[pa.ipc.RecordBatchStreamWriter, pa.NativeFile]] = {}
        # Also gone when a validation that failed half-way drops its validator without finishing.
        self._remove_folder = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)

    def write(self, batch: pa.RecordBatch) -> None:
        partition = pc.bit_wise_and(batch.column("hash"), PARTITIONS - 1)
        order = pc.sort_indices(partition)
        batch, partition = batch.take(order), partition.take(order)
        offset = 0
        for item in pc.value_counts(partition).to_pylist():  # ascending: the partitions were sorted
            count = item["counts"]
            self._writer(item["values"]).write_batch(batch.slice(offset, count))
            offset += count

    def finished(self) -> list[int]:
        """Finish the files; the numbers of the partitions written, to :meth:`read` one at a time."""
        numbers = sorted(self._writers)
        self._close_writers()
        return numbers

    def read(self, number: int) -> pa.Table:
        with pa.OSFile(self._path(number)) as source, pa.ipc.open_stream(source) as reader:
            return reader.read_all()

    def remove(self) -> None:
        self._close_writers()
        self._remove_folder()

    def _close_writers(self) -> None:
        for writer, sink in self._writers.values():
            writer.close()
            sink.close()
        self._writers.clear()

    def _writer(self, number: int) -> pa.ipc.RecordBatchStreamWriter:
        if number not in self._writers:
            # Buffered: a flush writes a small batch to each of 64 files; unbuffered, that is a
            # few system calls per batch (1 MiB of buffers over 64 files; a quarter less spill time).
            sink = pa.BufferedOutputStream(pa.OSFile(self._path(number), "wb"), _FILE_BUFFER)
            self._writers[number] = (pa.ipc.new_stream(sink, _SCHEMA), sink)
        return self._writers[number][0]

    def _path(self, number: int) -> str:
        return os.path.join(self.folder, f"{number:03d}.arrows")


def _repeats(table: pa.Table) -> Iterator[Repeat]:
    """Ids recorded more than once in a partition (so in different generations), later copies first-noted."""
    counts = pc.value_counts(table.column("hash"))
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return
    rows = table.filter(pc.is_in(table.column("hash"), repeated)).select(["position", "id"]).to_pylist()
    first: dict[str, int] = {}
    found = []
    for row in sorted(rows, key=lambda row: row["position"]):
        seen_at = first.setdefault(row["id"], row["position"])
        if seen_at != row["position"]:
            found.append(Repeat(row["position"], row["id"], seen_at))
    yield from found
