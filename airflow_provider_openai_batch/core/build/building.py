"""Build a job's input: records to request lines to shards, validated, each with a token and cost estimate.

Storage comes in as callbacks (the shard writer's opener, a reader for validation), so the build
operator and scripts share this. The steps run in the order that keeps bad input from costing
money: write the shards, validate what was written (streamed, duplicates caught across shards),
estimate, check the budget; only then may the caller publish the manifest that makes the job
submittable. Imports nothing from Airflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any

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


SPILL_ROWS = 16_384  # requests per spilled record batch


def write_requests_cached(
    records: Iterable[Mapping[str, Any]],
    builder: RequestBuilder,
    writer: ShardWriter,
    lookup: CacheLookup,
    hits_out: Callable[[pa.Table], None],
    *,
    spill_dir: str | None = None,
) -> tuple[list[Shard], CacheHits]:
    """Like :func:`write_requests`, but requests the cache answers are handed to ``hits_out``, not written.

    Whether a request is answered is known only once every key has been looked up, so each
    request waits in a local Arrow file as its per-record parts (the encoded custom_id and
    strings, without the constant text of every line) with its token count; a second pass joins
    the lines of the unanswered ones and writes them, in record order. ``builder`` must make
    answer keys.
    """
    folder = tempfile.mkdtemp(prefix="openai-batch-requests-", dir=spill_dir)
    path = os.path.join(folder, "requests.arrows")
    try:
        start = _spill(records, builder, lookup, path)
        builder.forget_ids()
        if not start:
            return writer.shards, CacheHits()
        answered = bytearray(start)
        saved = 0.0
        for table in lookup.hits():
            for position in table.column("position").to_pylist():
                answered[position] = 1
            saved += pc.sum(table.column("cost_usd")).as_py() or 0.0
            hits_out(table)
        with pa.OSFile(path) as source, pa.ipc.open_stream(source) as reader:  # read, not mapped into memory
            position = 0
            for batch in reader:
                count = batch.num_rows
                flags = bytes(answered[position : position + count])
                position += count
                if flags.count(1) == count:
                    continue
                if 1 in flags:
                    answered_mask = pa.Array.from_buffers(pa.uint8(), count, [None, pa.py_buffer(flags)])
                    batch = batch.filter(pc.equal(answered_mask, 0))
                ids = batch.column(0).to_pylist()
                tokens = batch.column(1).to_pylist() if batch.column(1).null_count == 0 else None
                columns = [batch.column(i).to_pylist() for i in range(2, batch.num_columns)]
                writer.write_chunk(ids, builder.join(columns), tokens)
    finally:
        writer.close()
        builder.forget_ids()
        lookup.close()
        shutil.rmtree(folder, ignore_errors=True)
    return writer.shards, CacheHits(answered.count(1), saved)


def _spill(records: Iterable[Mapping[str, Any]], builder: RequestBuilder, lookup: CacheLookup, path: str) -> int:
    """Render every record: its parts to the spill, its key to the lookup; the number of requests."""
    start = 0
    out: pa.ipc.RecordBatchStreamWriter | None = None
    pending: list[list[Any]] = []
    counted = True  # every chunk came with token counts

    def flush() -> None:
        nonlocal out
        ids, tokens, *columns = pending
        arrays = [
            pa.array(ids, pa.string()),
            pa.array(tokens, pa.int64()) if counted else pa.nulls(len(ids), pa.int64()),
        ]
        arrays += [pa.array(column, pa.binary()) for column in columns]
        batch = pa.RecordBatch.from_arrays(
            arrays, names=["custom_id", "tokens", *(f"v{i}" for i in range(len(columns)))]
        )
        if out is None:
            out = pa.ipc.new_stream(path, batch.schema)
        out.write_batch(batch)
        pending.clear()

    try:
        for chunk in builder.chunks(records, join=False):
            assert chunk.keys is not None, "the builder must make answer keys"
            assert chunk.columns is not None
            if start == 0:
                _probe("first-request", builder.join([column[:1] for column in chunk.columns])[0])
            lookup.add(chunk.keys, chunk.ids, start)
            counted = counted and chunk.tokens is not None
            if not pending:
                pending.extend([[], []] + [[] for _ in chunk.columns])
            pending[0].extend(chunk.ids)
            if counted:
                pending[1].extend(chunk.tokens or ())
            for target, column in zip(pending[2:], chunk.columns, strict=True):
                target.extend(column)
            start += len(chunk.ids)
            if len(pending[0]) >= SPILL_ROWS:
                flush()
        if pending:
            flush()
    finally:
        if out is not None:
            out.close()
    return start


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
