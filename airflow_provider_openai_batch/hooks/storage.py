"""Object storage I/O the operators and the sinks share (local paths and any fsspec URI)."""

from __future__ import annotations

import functools
import glob
import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_openai_batch.core.line_blocks import LineBlocks, opened_lines

PathLike = str | ObjectStoragePath
LOCAL_PROTOCOLS = ("file", "local", "")


def as_storage_path(path: PathLike) -> ObjectStoragePath:
    """Accept a plain local path as well as any ``ObjectStoragePath`` URI (s3://, file://, …)."""
    if isinstance(path, ObjectStoragePath):
        return path
    text = str(path)
    return ObjectStoragePath(text if "://" in text else f"file://{PurePosixPath(text).as_posix()}")


def opener_under(base: PathLike):
    """
    A shard opener for :class:`~airflow_provider_openai_batch.core.shards.ShardWriter`.

    A local shard is written under a new, unpredictable name and renamed over its own when
    closed: a file or symlink planted at the shard's path is replaced, never written through.
    """
    root = as_storage_path(base)
    root.mkdir(parents=True, exist_ok=True)
    local = root.protocol in LOCAL_PROTOCOLS

    def open_shard(name: str) -> tuple[str, IO[bytes]]:
        target = root / name
        if local:
            return str(target), _PublishOnClose(Path(target.path))
        return str(target), target.open("wb")

    return open_shard


def _umask() -> int:
    """The process umask, read without setting it (``os.umask`` would change it for every thread)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _PublishOnClose(io.BufferedWriter):
    """A file written beside ``final`` (created exclusively) and renamed to it on close."""

    def __init__(self, final: Path) -> None:
        fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
        super().__init__(io.FileIO(fd, "wb"), buffer_size=1024 * 1024)
        self._temp, self._final = temp, final

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        os.chmod(self._temp, 0o666 & ~_umask())  # what a plain open() would have given it
        os.replace(self._temp, self._final)


def lineage_dataset(path: PathLike) -> tuple[str, str]:
    """OpenLineage's (namespace, name) of a path: ``s3://bucket`` and the key, never the conn id."""
    target = as_storage_path(path)
    if target.protocol in LOCAL_PROTOCOLS:
        return "file", target.path
    # Airflow 3.0 keeps the URI's ``conn_id@`` in ``bucket`` and ``namespace``: drop it.
    return f"{target.protocol}://{target.bucket.rpartition('@')[2]}", target.key


def iter_lines(path: PathLike) -> LineBlocks:
    """The lines of a file (without their newline), read a block at a time; open only while they are read."""
    return opened_lines(functools.partial(as_storage_path(path).open, "rb"))


@contextmanager
def atomic_open(path: ObjectStoragePath, block_size: int | None = None) -> Iterator[IO[bytes]]:
    """
    A binary handle whose content appears under ``path`` whole, or not at all.

    Object stores publish an object only when its upload completes, so on an error the upload is
    discarded (a multipart upload is aborted) instead of being completed by ``close``. On a local
    filesystem the file is written beside the target under a unique name and renamed over it.
    ``block_size`` is the store's upload part size (s3fs: 50 MB by default, 5 MB at least).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    is_local = path.protocol in LOCAL_PROTOCOLS
    if is_local:
        _remove_stale_partials(Path(path.path))
    target = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial") if is_local else path
    # The fsspec file itself (not the path's lineage-tracking wrapper): its upload must be discardable.
    options = {} if block_size is None else {"block_size": block_size}
    handle: Any = target.fs.open(target.path, mode="wb", **options)
    try:
        yield handle
    except BaseException:
        if is_local:
            handle.close()
            target.unlink(missing_ok=True)
        else:
            _discard(handle)
        raise
    handle.close()
    if is_local:
        target.rename(path)


def _remove_stale_partials(final: Path) -> None:
    """Partials of this very file left by a killed writer: only a rename ever completes one."""
    for stale in final.parent.glob(f".{glob.escape(final.name)}.*.partial"):
        stale.unlink(missing_ok=True)


def write_atomically(path: ObjectStoragePath, chunks: Iterator[bytes]) -> int:
    """Write ``chunks`` so no partial object is ever visible under the final name; returns the size."""
    size = 0
    with atomic_open(path) as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
    return size


def _discard(handle: Any) -> None:
    """Throw an unfinished upload away; ``close()`` would publish what was written so far."""
    try:
        handle.discard()  # fsspec buffered files: s3fs aborts the multipart upload
    finally:
        # They also complete the upload when closed or garbage-collected: mark this one finished.
        handle.closed = True


class StorageParts:
    """The answer cache's parts under an ``ObjectStoragePath`` prefix (``core.cache.store.Parts``).

    A part is written through :func:`atomic_open`: whole or not at all, under a name no other
    writer uses; listing skips anything that is not a finished part.
    """

    def __init__(self, root: PathLike) -> None:
        self.root = as_storage_path(root)
        self.location = str(self.root)

    def names(self) -> list[str]:
        from airflow_provider_openai_batch.core.cache.store import is_part

        if not self.root.exists():
            return []
        return sorted(path.name for path in self.root.iterdir() if is_part(path.name))

    def open_read(self, name: str) -> Any:
        return (self.root / name).open("rb")

    def open_write(self, name: str) -> Any:
        return atomic_open(self.root / name)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)
