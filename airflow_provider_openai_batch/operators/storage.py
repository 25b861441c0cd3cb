"""Small helpers the operators share for object storage (local paths and any fsspec URI)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from airflow.sdk import ObjectStoragePath

from airflow_provider_openai_batch.hooks.openai_batch import PathLike, as_storage_path


def opener_under(base: PathLike):
    """A shard opener for :class:`~airflow_provider_openai_batch.core.shards.ShardWriter`."""
    root = as_storage_path(base)
    root.mkdir(parents=True, exist_ok=True)

    def open_shard(name: str) -> tuple[str, IO[bytes]]:
        target = root / name
        return str(target), target.open("wb")

    return open_shard


def iter_lines(path: PathLike) -> Iterator[bytes]:
    with as_storage_path(path).open("rb") as handle:
        yield from handle


def write_atomically(path: ObjectStoragePath, chunks: Iterator[bytes]) -> int:
    """
    Write so no partial object is ever visible under the final name.

    Object stores publish an object only when its upload completes; on a local filesystem the
    file is written beside the target and renamed over it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    is_local = path.protocol in ("file", "local", "")
    target = path.with_name(f".{path.name}.partial") if is_local else path
    size = 0
    with target.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
    if is_local:
        target.rename(path)
    return size
