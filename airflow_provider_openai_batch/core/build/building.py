"""Build a job's input: records to request lines to shards, validated, each with a token and cost estimate.

Storage comes in as callbacks (the shard writer's opener, a reader for validation), so the build
operator and scripts share this. The steps run in the order that keeps bad input from costing
money: write the shards, validate what was written (streamed, duplicates caught across shards),
estimate, check the budget; only then may the caller publish the manifest that makes the job
submittable. Imports nothing from Airflow.
"""

from __future__ import annotations

import array
import collections
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, Final

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from airflow_provider_openai_batch.core.build.requests import RequestBuilder
from airflow_provider_openai_batch.core.cache.lookup import CacheLookup
from airflow_provider_openai_batch.core.costs import Estimate, PriceTable, UnknownModelPriceError
from airflow_provider_openai_batch.core.line_blocks import capped_lines
from airflow_provider_openai_batch.core.shards import Shard, ShardWriter, with_estimate
from airflow_provider_openai_batch.core.validate.validation import ValidationReport, Validator

ShardReader = Callable[[str], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class JobEstimate:
    """The job's totals and how they were reached; ``total`` is None when tokens were not counted."""

    total: Estimate | None
    method: str
    exact_strings: int = 0
    estimated_strings: int = 0
    priced: bool = True
    note: str = ""

    def describe(self) -> str:
        if self.total is None:
            return f"no token estimate ({self.note})"
        text = self.total.describe() if self.priced else self.total.describe().rsplit(", $", 1)[0] + ", cost unknown"
        how = "tokens counted exactly"
        if self.method == "sample" and self.estimated_strings:
            how = (
                f"tokens counted exactly for {self.exact_strings:,} prompt strings and estimated from length "
                f"for {self.estimated_strings:,}"
            )
        extra = f"; {self.note}" if self.note else ""
        if self.total.uncapped_requests:
            extra += (
                f"; {self.total.uncapped_requests:,} request(s) set no output limit, so the model's maximum was assumed"
            )
        return f"{text} ({how}; output is the ceiling){extra}"

    def to_dict(self) -> dict[str, Any]:
        total = self.total
        return {
            "method": self.method,
            "requests": total.requests if total else None,
            "input_tokens": total.input_tokens if total else None,
            "max_output_tokens": total.max_output_tokens if total else None,
            "cost_usd": round(total.cost_usd, 6) if total and self.priced else None,
            "exact_strings": self.exact_strings,
            "estimated_strings": self.estimated_strings,
            "note": self.note,
        }


def write_requests(records: Iterable[Mapping[str, Any]], builder: RequestBuilder, writer: ShardWriter) -> list[Shard]:
    """Render every record into the writer's shards (the last one is closed even on error).

    The first request is validated as soon as it is written: a body parameter that is wrong is
    wrong on every line, and this reports it (as ``first-shard:1: ...``) before a million lines
    are written to object storage.
    """
    try:
        probed = False
        for chunk in builder.chunks(records):
            writer.write_chunk(chunk.ids, chunk.lines, chunk.tokens)
            if not probed:
                _probe(writer.shards[0].path if writer.shards else writer.current_path, chunk.lines[0])
                probed = True
    finally:
        writer.close()
        builder.forget_ids()
    return writer.shards


@dataclass(frozen=True)
class CacheHits:
    """What the answer cache answered: how many requests, and what their answers cost when bought."""

    requests: int = 0
    saved_usd: float = 0.0


SPILL_ROWS = 16_384  # requests per spilled batch
_UNANSWERED = bytes.maketrans(b"\x00\x01", b"\x01\x00")  # answered flags to keep flags
_ONES: Final = itertools.repeat(1)
_decode_ids = msgspec.json.Decoder(list[str]).decode


def write_requests_cached(
    records: Iterable[Mapping[str, Any]],
    builder: RequestBuilder,
    writer: ShardWriter,
    lookup: CacheLookup,
    hits_out: Callable[[pa.Table], None],
    *,
    spill_dir: str | None = None,
    spill_rows: int = SPILL_ROWS,
) -> tuple[list[Shard], CacheHits]:
    """Like :func:`write_requests`, but requests the cache answers are handed to ``hits_out``, not written.

    Whether a request is answered is known only once every key has been looked up, so each
    request waits in a local file as its per-record parts (the encoded custom_id and strings,
    without the constant text of every line) with its token count; a second pass joins the lines
    of the unanswered ones and writes them, in record order. ``builder`` must make answer keys.
    """
    folder = tempfile.mkdtemp(prefix="openai-batch-requests-", dir=spill_dir)
    try:
        with _PartsSpill(os.path.join(folder, "requests.spill"), spill_rows) as spill:
            start = _spill(records, builder, lookup, spill)
            builder.forget_ids()
            if not start:
                return writer.shards, CacheHits()
            answered = bytearray(start)
            mark = answered.__setitem__
            saved = 0.0
            for table in lookup.hits():
                positions = table.column("position").combine_chunks()
                words = memoryview(positions.buffers()[1]).cast("q")  # no nulls: every hit has a position
                collections.deque(map(mark, words[positions.offset : positions.offset + len(positions)], _ONES), 0)
                saved += pc.sum(table.column("cost_usd")).as_py() or 0.0
                hits_out(table)
            for ids, columns, tokens in spill.unanswered(answered):
                writer.write_chunk(ids, builder.join(columns), tokens)
    finally:
        writer.close()
        builder.forget_ids()
        lookup.close()
        shutil.rmtree(folder, ignore_errors=True)
    return writer.shards, CacheHits(answered.count(1), saved)


def _spill(
    records: Iterable[Mapping[str, Any]], builder: RequestBuilder, lookup: CacheLookup, spill: _PartsSpill
) -> int:
    """Render every record: its parts to the spill, its key to the lookup; the number of requests."""
    start = 0
    for chunk in builder.chunks(records, join=False):
        assert chunk.keys is not None, "the builder must make answer keys"
        assert chunk.columns is not None
        if start == 0:
            _probe("first-request", builder.join([column[:1] for column in chunk.columns])[0])
        lookup.add(chunk.keys, chunk.ids, start)
        spill.add(chunk.columns, chunk.tokens)
        start += len(chunk.ids)
    spill.flush()
    return start


class _PartsSpill:
    """Requests' encoded parts in local files, read back a batch of about ``rows`` at a time without the answered ones.

    A chunk is written as its values, column after column, each ending in a newline (JSON-encoded
    text never holds a raw newline), its token counts as int64s to a second file; what stays in
    memory is each chunk's row count. Joined and split in C, a chunk at a time: small buffers the
    allocator reuses, where an Arrow batch cost a conversion per value and fresh pages per batch.
    """

    def __init__(self, path: str, rows: int) -> None:
        self._values = open(path, "w+b", buffering=1 << 20)  # noqa: SIM115 - closed by __exit__
        self._counts = open(path + ".tokens", "w+b", buffering=1 << 20)  # noqa: SIM115
        self._rows = rows
        self._columns = 0
        self._counted = True  # the builder counts every chunk's tokens or none
        # Per batch: its chunks' row counts and bytes.
        self._batches: list[tuple[array.array[int], array.array[int]]] = []
        self._batch_rows = 0
        self._chunks: array.array[int] = array.array("i")
        self._sizes: array.array[int] = array.array("q")

    def __enter__(self) -> _PartsSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self._values.close()
        self._counts.close()

    def add(self, columns: list[list[bytes]], tokens: list[int] | None) -> None:
        self._columns = len(columns)
        blob = b"\n".join(itertools.chain.from_iterable(columns)) + b"\n"
        self._values.write(blob)
        if tokens is None:
            self._counted = False
        elif self._counted:
            self._counts.write(array.array("q", tokens).tobytes())
        self._sizes.append(len(blob))
        self._chunks.append(len(columns[0]))
        self._batch_rows += len(columns[0])
        if self._batch_rows >= self._rows:
            self.flush()

    def flush(self) -> None:
        if self._chunks:
            self._batches.append((self._chunks, self._sizes))
            self._batch_rows = 0
            self._chunks, self._sizes = array.array("i"), array.array("q")

    def unanswered(self, answered: bytearray) -> Iterator[tuple[list[str], list[list[bytes]], list[int] | None]]:
        """Each batch's requests without an answer: their ids, encoded columns and token counts."""
        self._values.flush()
        self._counts.flush()
        self._values.seek(0)
        self._counts.seek(0)
        counted = self._counted
        position = 0
        for chunks, sizes in self._batches:
            rows = sum(chunks)
            flags = answered[position : position + rows]
            position += rows
            if flags.count(1) == rows:
                self._values.seek(sum(sizes), os.SEEK_CUR)
                self._counts.seek(8 * rows if counted else 0, os.SEEK_CUR)
                continue
            keep = flags.translate(_UNANSWERED)
            columns: list[list[bytes]] = [[] for _ in range(self._columns)]
            row = 0
            for count, chunk_size in zip(chunks, sizes, strict=True):  # a chunk at a time: small buffers
                values = self._values.read(chunk_size).split(b"\n")
                if len(values) != count * self._columns + 1:  # the last newline leaves an empty value
                    raise AssertionError(f"the spill holds {len(values) - 1} values for a chunk of {count} requests")
                wanted = keep[row : row + count]
                for index, column in enumerate(columns):
                    column.extend(itertools.compress(values[index * count : (index + 1) * count], wanted))
                row += count
            tokens = None
            if counted:
                tokens = list(itertools.compress(array.array("q", self._counts.read(8 * rows)), keep))
            yield _decode_ids(b"[" + b",".join(columns[0]) + b"]"), columns, tokens


def _probe(path: str, line: bytes) -> None:
    probe = Validator()
    probe.validate_lines(path, [line])
    probe.report().raise_for_errors()


def estimate_shards(
    shards: list[Shard], builder: RequestBuilder, prices: PriceTable
) -> tuple[list[Shard], JobEstimate]:
    """Each shard with its output ceiling and cost, and the job's totals."""
    output = builder.output_tokens
    counter = builder.token_counter
    if output is None or counter is None or any(shard.input_tokens is None for shard in shards):
        return shards, JobEstimate(None, "none", note=builder.token_note or "token estimate off")
    model = builder.template.model
    try:
        prices.resolve(model)
        priced, note = True, ""
    except UnknownModelPriceError as err:
        priced, note = False, str(err)
    estimated: list[Shard] = []
    total = Estimate.empty(model)
    for shard in shards:
        max_output = output.max_output_tokens * shard.requests
        cost = prices.cost(model, shard.input_tokens or 0, max_output) if priced else 0.0
        estimated.append(with_estimate(shard, max_output, cost if priced else None))
        total += Estimate(
            requests=shard.requests,
            input_tokens=shard.input_tokens or 0,
            max_output_tokens=max_output,
            cost_usd=cost,
            model=model,
            uncapped_requests=shard.requests if output.output_limit_assumed else 0,
        )
    job = JobEstimate(total, counter.mode, counter.exact_strings, counter.estimated_strings, priced, note)
    return estimated, job


def validate_shards(shards: Iterable[Shard], reader: ShardReader, **limits: int) -> ValidationReport:
    """Stream every shard back from storage through one validator (custom_ids unique across them)."""
    validator = Validator(**limits)
    for shard in shards:
        with reader(shard.path) as handle:
            validator.validate_lines(shard.path, capped_lines(handle))
    return validator.report()


def local_reader(path: str) -> AbstractContextManager[IO[bytes]]:
    """A ``ShardReader`` for local files."""
    return contextlib.closing(open(path, "rb", buffering=1 << 20))
