"""Split request lines into shard files within the per-file limits, and describe them in a manifest.

Storage is reached only through an ``opener`` callback, so the same code writes to a local
directory in the CLI and to any ``ObjectStoragePath`` in Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE

# Given a shard file name, return where it lives (a path or URI) and a binary handle to write it.
Opener = Callable[[str], tuple[str, IO[bytes]]]

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Shard:
    """One input file: what it holds and its fingerprint (the sha256 keys re-attachment on retry)."""

    index: int
    path: str
    requests: int
    bytes: int
    sha256: str
    first_custom_id: str
    last_custom_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    @classmethod
    def from_json(cls, raw: bytes | str) -> Manifest:
        data = msgspec.json.decode(raw)
        shards = tuple(Shard(**s) for s in data.pop("shards"))
        return cls(shards=shards, **data)


def shard_name(job_id: str, index: int) -> str:
    return f"{job_id}-shard-{index:05d}.jsonl"


class ShardWriter:
    """Writes lines to shard files, starting a new one before a limit would be crossed."""

    def __init__(
        self,
        opener: Opener,
        job_id: str,
        *,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_BYTES_PER_FILE,
    ) -> None:
        if not 0 < max_requests <= MAX_REQUESTS_PER_FILE:
            raise OpenAIBatchInputError(f"max_requests must be 1..{MAX_REQUESTS_PER_FILE}, got {max_requests}")
        if not 0 < max_bytes <= MAX_BYTES_PER_FILE:
            raise OpenAIBatchInputError(f"max_bytes must be 1..{MAX_BYTES_PER_FILE}, got {max_bytes}")
        self._opener = opener
        self._job_id = job_id
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self.shards: list[Shard] = []
        self._handle: IO[bytes] | None = None
        self._name = ""
        self._count = 0
        self._size = 0
        self._hash = hashlib.sha256()
        self._first = ""
        self._last = ""

    def write(self, custom_id: str, line: bytes) -> None:
        if len(line) > self._max_bytes:
            raise OpenAIBatchInputError(
                f"request {custom_id!r} alone is {len(line)} bytes, over the {self._max_bytes}-byte file limit"
            )
        if self._handle is not None and (self._count >= self._max_requests or self._size + len(line) > self._max_bytes):
            self._close_shard()
        if self._handle is None:
            self._open_shard(custom_id)
        assert self._handle is not None
        self._handle.write(line)
        self._hash.update(line)
        self._count += 1
        self._size += len(line)
        self._last = custom_id

    def write_all(self, lines: Iterable[tuple[str, bytes]]) -> list[Shard]:
        try:
            for custom_id, line in lines:
                self.write(custom_id, line)
        finally:
            self.close()
        return self.shards

    def close(self) -> None:
        if self._handle is not None:
            self._close_shard()

    def _open_shard(self, custom_id: str) -> None:
        self._name, self._handle = self._opener(shard_name(self._job_id, len(self.shards)))
        self._count = self._size = 0
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
            )
        )
