"""Shards and manifests the short way, for tests: the package streams, tests may gather."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from airflow_provider_openai_batch.core.shards import Manifest, Shard, ShardWriter


def write_all(writer: ShardWriter, lines: Iterable[tuple[str, bytes]]) -> list[Shard]:
    """Write every ``(custom_id, line)`` and close the last shard."""
    try:
        for custom_id, line in lines:
            writer.write(custom_id, line)
    finally:
        writer.close()
    return writer.shards


def read_manifest(raw: bytes | str) -> Manifest:
    """A manifest from the JSON the build wrote beside its shards."""
    data = msgspec.json.decode(raw)
    shards = tuple(Shard(**shard) for shard in data.pop("shards"))
    return Manifest(shards=shards, **data)
