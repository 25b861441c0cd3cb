"""Which failed requests are worth another batch, and the retry shards that carry them.

Worth retrying: what the service may well answer next time — throttling (429), its own errors
(5xx), timeouts (408, ``request_timeout``), requests an expired batch never ran, and on request
those a cancelled batch never ran. Never retried: other 4xx (the request itself is wrong and
would be billed again to fail again), invalid JSON answers, and requests missing from a completed
batch (the service may have run and billed them).

A retry shard holds the original request lines byte for byte, in file order, so the same failures
always make the same file: its sha256 then finds the batch already created for it when the
collecting task is retried, instead of paying twice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError, ReconcileError
from airflow_provider_openai_batch.core.limits import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE
from airflow_provider_openai_batch.core.line_blocks import line_lists
from airflow_provider_openai_batch.core.shards import Opener, Shard, ShardWriter

MAX_ATTEMPTS_LIMIT = 10
RETRIABLE_HTTP_STATUSES = frozenset({408, 429})
TIMEOUT_ERROR_CODES = frozenset({"request_timeout", "timeout"})

if TYPE_CHECKING:
    import pyarrow as pa


@functools.cache
def _codes() -> tuple[pa.Array, pa.Array]:
    """The retriable HTTP statuses and timeout codes as Arrow arrays (pyarrow loads when a result is judged)."""
    import pyarrow as pa

    return pa.array(sorted(RETRIABLE_HTTP_STATUSES), pa.int32()), pa.array(sorted(TIMEOUT_ERROR_CODES), pa.string())


# (input shard index, number of consecutive lines from it), in file order.
Origins = Sequence[Sequence[int]]


@dataclass(frozen=True)
class RetryPolicy:
    """
    How many attempts a request gets and which failures earn another one.

    :param max_attempts: attempts per request, the first batch included (1: never retry).
    :param retry_cancelled: also retry requests a cancelled batch never ran (off by default: a
        cancel is usually someone's decision to stop paying).
    """

    max_attempts: int = 3
    retry_cancelled: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.max_attempts, int) and 1 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT):
            raise OpenAIBatchInputError(
                f"max_attempts must be an integer from 1 (no retries) to {MAX_ATTEMPTS_LIMIT}, "
                f"got {self.max_attempts!r}"
            )

    def retry_mask(self, batch: pa.RecordBatch, attempt: int) -> pa.BooleanArray:
        """True for the rows of ``batch`` (made at ``attempt``) that go into the next attempt."""
        import pyarrow as pa
        import pyarrow.compute as pc

        retriable_codes, timeout_codes = _codes()
        if attempt >= self.max_attempts:
            return pa.repeat(pa.scalar(False), batch.num_rows)
        status, http = batch.column("status"), batch.column("http_status")
        retriable_http = pc.or_(pc.is_in(http, retriable_codes), pc.greater_equal(http, 500))
        timed_out = pc.and_(pc.is_null(http), pc.is_in(batch.column("error_code"), timeout_codes))
        worth_it = pc.or_(pc.fill_null(retriable_http, False), pc.fill_null(timed_out, False))
        retry = pc.or_(pc.and_(pc.equal(status, "failed"), worth_it), pc.equal(status, "expired"))
        if self.retry_cancelled:
            retry = pc.or_(retry, pc.equal(status, "cancelled"))
        return pc.fill_null(retry, False)


@dataclass(frozen=True)
class RetryShard:
    """A retry shard: a shard file plus where each run of its lines came from."""

    shard: Shard
    attempt: int
    origins: tuple[tuple[int, int], ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.shard.to_dict(), "attempt": self.attempt, "origins": [list(run) for run in self.origins]}


class _RequestId(msgspec.Struct):
    custom_id: str


_decode_request = msgspec.json.Decoder(_RequestId).decode


# A line this package wrote starts with its custom_id: read the id without parsing the body.
_PREFIX = b'{"custom_id":"'
_ID_CHUNK = 1024


def request_ids(lines: Iterable[bytes]) -> Iterator[str]:
    """
    The custom ids of request lines (blank lines skipped), for joining results to requests.

    When every line of a chunk starts with ``{"custom_id":"`` and no id holds an escape — as this
    package writes them — the ids are sliced from the lines, a few C calls per chunk; any other
    chunk is parsed line by line.
    """
    start = len(_PREFIX)
    for chunk in line_lists(lines, _ID_CHUNK):
        if [line[:start] for line in chunk].count(_PREFIX) == len(chunk):
            try:
                ids = [line[start : line.index(b'"', start)] for line in chunk]
            except ValueError:
                ids = []
            if ids and b"\\" not in b"".join(ids):
                yield from map(bytes.decode, ids)
                continue
        for line in chunk:
            if line.strip():
                yield _decode_request(line).custom_id


class RetryShardWriter:
    """
    Copies the request lines of the requests to retry into new shards, within the per-file limits.

    Feed it each source shard in order with :meth:`add`; :meth:`close` returns the retry shards.
    """

    def __init__(
        self,
        opener: Opener,
        name: str,
        attempt: int,
        *,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_BYTES_PER_FILE,
    ) -> None:
        self.attempt = attempt
        self._writer = ShardWriter(opener, name, max_requests=max_requests, max_bytes=max_bytes)
        self._origins: list[list[list[int]]] = []
        self.requests = 0

    def add(self, lines: Iterable[bytes], retry_ids: set[str], origins: Origins) -> int:
        """Copy the lines of ``retry_ids`` from one source shard; returns how many were copied."""
        copied = 0
        runs = _expand(origins)
        for line in lines:
            if not line.strip():
                continue
            origin = next(runs)
            custom_id = _decode_request(line).custom_id
            if custom_id not in retry_ids:
                continue
            self._writer.write(custom_id, line if line.endswith(b"\n") else line + b"\n")
            self._note_origin(origin)
            copied += 1
        if copied != len(retry_ids):
            raise ReconcileError(f"{len(retry_ids) - copied} request(s) to retry were not found in their source shard")
        self.requests += copied
        return copied

    def close(self) -> list[RetryShard]:
        self._writer.close()
        shards = self._writer.shards
        return [
            RetryShard(shard, self.attempt, tuple((int(s), int(n)) for s, n in runs))
            for shard, runs in zip(shards, self._origins, strict=True)
        ]

    def _note_origin(self, origin: int) -> None:
        index = len(self._writer.shards)  # the shard just written to is the open one after the closed ones
        while len(self._origins) <= index:
            self._origins.append([])
        runs = self._origins[index]
        if runs and runs[-1][0] == origin:
            runs[-1][1] += 1
        else:
            runs.append([origin, 1])


def _expand(origins: Origins) -> Iterator[int]:
    for shard, count in origins:
        for _ in range(count):
            yield shard
    raise ReconcileError("the source shard has more lines than its origins account for")
