"""Split request lines into shard files within the per-file limits, and describe them in a manifest.

Storage is reached only through an ``opener`` callback, so the same code writes to a local
directory in the CLI and to any ``ObjectStoragePath`` in Airflow. Lines arrive in chunks; a chunk
that fits the open shard is written, hashed and counted in one go, so the per-line cost is a few
list operations in C.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE

# Given a shard file name, return where it lives (a path or URI) and a binary handle to write it.
Opener = Callable[[str], tuple[str, IO[bytes]]]

MANIFEST_VERSION = 2


class Shard(msgspec.Struct, kw_only=True, frozen=True):
    """One input file: what it holds and its fingerprint (the sha256 keys re-attachment on retry).

    ``input_tokens`` is the estimated input (enqueued prompt) tokens; ``max_output_tokens`` and
    ``cost_usd`` are ceilings (every request writing its output limit), None when unknown. The
    task hand-off (``core.handoffs.ShardRef``) is this plus the job's fields, by inheritance.
    """

    index: int
    path: str
    requests: int
    bytes: int
    sha256: str
    first_custom_id: str = ""
    last_custom_id: str = ""
    input_tokens: int | None = None
    max_output_tokens: int | None = None
    cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


@dataclass(frozen=True)
class Manifest:
    """The job's description, written next to its shards; XCom carries its location, not its data."""

    job_id: str
    endpoint: str
    model: str
    key_field: str
    shards: tuple[Shard, ...]
    version: int = MANIFEST_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.shards)

    def to_json(self) -> bytes:
        data = asdict(self)
        return msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"


def shard_name(job_id: str, index: int) -> str:
    return f"{job_id}-shard-{index:05d}.jsonl"


class ShardWriter:
    """Writes lines to shard files, starting a new one before a limit would be crossed.

    :param max_requests: requests per shard (at most the API's 50,000).
    :param max_bytes: bytes per shard (at most the API's 200 MB).
    :param max_tokens: estimated input tokens per shard (for the per-model enqueued-token limit);
        None for no limit. Lines then need token estimates.
    """

    def __init__(
        self,
        opener: Opener,
        job_id: str,
        *,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_BYTES_PER_FILE,
        max_tokens: int | None = None,
    ) -> None:
        if not 0 < max_requests <= MAX_REQUESTS_PER_FILE:
            raise OpenAIBatchInputError(f"max_requests must be 1..{MAX_REQUESTS_PER_FILE}, got {max_requests}")
        if not 0 < max_bytes <= MAX_BYTES_PER_FILE:
            raise OpenAIBatchInputError(f"max_bytes must be 1..{MAX_BYTES_PER_FILE}, got {max_bytes}")
        if max_tokens is not None and max_tokens <= 0:
            raise OpenAIBatchInputError(f"max_tokens must be positive, got {max_tokens}")
        self._opener = opener
        self._job_id = job_id
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._max_tokens = max_tokens
        self.shards: list[Shard] = []
        self._handle: IO[bytes] | None = None
        self._name = ""
        self._count = self._size = self._tokens = 0
        self._counting = True  # whether every line so far came with a token estimate
        self._hash = hashlib.sha256()
        self._first = ""
        self._last = ""

    def write(self, custom_id: str, line: bytes, tokens: int | None = None) -> None:
        """Write one line (with its estimated input tokens, when known)."""
        self._check_alone(custom_id, len(line), tokens)
        if self._handle is not None and not self._fits(1, len(line), tokens or 0):
            self._close_shard()
        if self._handle is None:
            self._open_shard(custom_id)
        self._put(line, 1, len(line), tokens, custom_id)

    def write_chunk(self, ids: Sequence[str], lines: Sequence[bytes], tokens: Sequence[int] | None = None) -> None:
        """Write consecutive lines; in one go when they all fit the open shard."""
        if not lines:
            return
        size = sum(map(len, lines))
        total = sum(tokens) if tokens is not None else None
        alone_ok = max(map(len, lines)) <= self._max_bytes and (
            self._max_tokens is None or tokens is None or max(tokens) <= self._max_tokens
        )
        if alone_ok:
            if self._handle is None:
                self._open_shard(ids[0])
            if self._fits(len(lines), size, total or 0):
                self._put(b"".join(lines), len(lines), size, total, ids[-1])
                return
        for custom_id, line, count in zip(ids, lines, tokens or itertools.repeat(None), strict=False):
            self.write(custom_id, line, count)

    def close(self) -> None:
        if self._handle is not None:
            self._close_shard()

    @property
    def current_path(self) -> str:
        """Where the shard being written lives (empty before the first line)."""
        return self._name

    def _check_alone(self, custom_id: str, size: int, tokens: int | None) -> None:
        if size > self._max_bytes:
            raise OpenAIBatchInputError(
                f"request {custom_id!r} alone is {size} bytes, over the {self._max_bytes}-byte file limit"
            )
        if self._max_tokens is not None and tokens is not None and tokens > self._max_tokens:
            raise OpenAIBatchInputError(
                f"request {custom_id!r} alone is about {tokens:,} input tokens, over the limit of "
                f"{self._max_tokens:,} per shard; raise max_tokens_per_shard or shorten the prompt"
            )

    def _fits(self, count: int, size: int, tokens: int) -> bool:
        return (
            self._count + count <= self._max_requests
            and self._size + size <= self._max_bytes
            and (self._max_tokens is None or self._tokens + tokens <= self._max_tokens)
        )

    def _put(self, data: bytes, count: int, size: int, tokens: int | None, last: str) -> None:
        assert self._handle is not None
        self._handle.write(data)
        self._hash.update(data)
        self._count += count
        self._size += size
        if tokens is None:
            self._counting = False
        else:
            self._tokens += tokens
        self._last = last

    def _open_shard(self, custom_id: str) -> None:
        self._name, self._handle = self._opener(shard_name(self._job_id, len(self.shards)))
        self._count = self._size = self._tokens = 0
        self._counting = True
        self._hash = hashlib.sha256()
        self._first = custom_id

    def _close_shard(self) -> None:
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        self.shards.append(
            Shard(
                index=len(self.shards),
                path=self._name,
                requests=self._count,
                bytes=self._size,
                sha256=self._hash.hexdigest(),
                first_custom_id=self._first,
                last_custom_id=self._last,
                input_tokens=self._tokens if self._counting else None,
            )
        )


def with_estimate(shard: Shard, max_output_tokens: int | None, cost_usd: float | None) -> Shard:
    """The shard with its output ceiling and cost filled in."""
    return msgspec.structs.replace(shard, max_output_tokens=max_output_tokens, cost_usd=cost_usd)
