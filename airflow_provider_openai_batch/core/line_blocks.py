"""JSONL read a block at a time: the lines of each block come as one list.

Reconciliation and the request-id scan work on lists of lines. Handing them each line through a
generator, then gathering lines into lists again, cost a tenth of a reconciliation of 1.2M
results. :class:`LineBlocks` keeps the split of each block as the list ``bytes.split`` made,
and :func:`line_lists` slices those lists directly. Anything else iterable still works line by
line.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from airflow_provider_openai_batch.core.limits import MAX_LINE_BYTES

READ_BLOCK = 1 << 20


class LineBlocks:
    """
    The lines (without their newline) of byte chunks of any size, whole lines per chunk.

    Iterate it for lines or call :meth:`blocks` for a list per chunk; it reads its chunks once.
    """

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain.from_iterable(self.blocks())

    def blocks(self) -> Iterator[list[bytes]]:
        """The complete lines of each chunk as a list; a line cut by a chunk's end goes with the next."""
        pending = b""
        for chunk in self._chunks:
            if not chunk:
                continue
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if lines:
                yield lines
        if pending:
            yield [pending]


def opened_lines(opener: Callable[[], IO[bytes] | Any], block: int = READ_BLOCK) -> LineBlocks:
    """The lines of what ``opener`` opens: opened when reading starts, closed when it ends."""
    return LineBlocks(_opened_chunks(opener, block))


def file_lines(path: str, block: int = READ_BLOCK) -> LineBlocks:
    """The lines of a local file, open only while they are read."""
    return opened_lines(functools.partial(open, path, "rb"), block)


def _opened_chunks(opener: Callable[[], IO[bytes] | Any], block: int) -> Iterator[bytes]:
    with opener() as handle:
        while chunk := handle.read(block):
            yield chunk


def file_range_lines(path: str, start: int, end: int, block: int = READ_BLOCK) -> LineBlocks:
    """The lines of bytes ``start:end`` of a local file (a range from :func:`line_ranges`)."""
    return LineBlocks(_range_chunks(path, start, end, block))


def _range_chunks(path: str, start: int, end: int, block: int) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0 and (chunk := handle.read(min(block, left))):
            left -= len(chunk)
            yield chunk


FileRange = tuple[str, int, int]  # a local file's path and a byte range of whole lines in it


def line_ranges(paths: Sequence[str], parts: int) -> list[tuple[FileRange, ...]]:
    """
    The local files ``paths``, read one after the other, cut into at most ``parts`` runs of whole lines.

    Each run is its pieces of the files, in order, about the same number of bytes each; a cut
    goes to the start of the next line, so read in turn the runs give every line once, in order.
    """
    sizes = [os.path.getsize(path) for path in paths]
    total = sum(sizes)
    cuts = sorted({0, total, *(_line_start(paths, sizes, total * k // parts) for k in range(1, parts))})
    runs = []
    for start, end in itertools.pairwise(cuts):
        pieces, base = [], 0
        for path, size in zip(paths, sizes, strict=True):
            low, high = max(start, base), min(end, base + size)
            if low < high:
                pieces.append((path, low - base, high - base))
            base += size
        runs.append(tuple(pieces))
    return runs


def _line_start(paths: Sequence[str], sizes: Sequence[int], offset: int) -> int:
    """The first offset at or after ``offset`` (counted across the files) where a line starts."""
    base = 0
    for path, size in zip(paths, sizes, strict=True):
        if offset < base + size:
            local = offset - base
            if local == 0:
                return offset
            with open(path, "rb") as handle:
                handle.seek(local - 1)  # a line starts at ``local`` if the byte before it ends one
                position = local - 1
                while chunk := handle.read(1 << 16):
                    newline = chunk.find(b"\n")
                    if newline >= 0:
                        return base + position + newline + 1
                    position += len(chunk)
            return base + size  # the file's last line has no ending: the next file starts one
        base += size
    return base


def line_lists(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    """Lists of at most ``size`` lines, in order: slices of whole blocks when ``lines`` is a :class:`LineBlocks`."""
    if isinstance(lines, LineBlocks):
        for block in lines.blocks():
            if len(block) <= size:
                yield block
            else:
                for start in range(0, len(block), size):
                    yield block[start : start + size]
        return
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def bounded_lines(read: Callable[[int], bytes], max_line: int, block: int = READ_BLOCK) -> Iterator[bytes]:
    """
    Lines with their endings, read ``block`` bytes at a time, holding at most one long line.

    A line longer than ``max_line`` comes as its first ``max_line + 1`` bytes (no ending) and the
    rest of it is skipped unread by any parser: the caller sees it is too long without it being
    held whole (a 1 GiB line inflated from a small ``.gz`` never is). ``readline`` cannot do this
    for every handle: fsspec's ignores its size limit.
    """
    pending = b""
    skipping = False
    while chunk := read(block):
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                continue
            chunk, skipping = chunk[end + 1 :], False
        lines = io.BytesIO(pending + chunk if pending else chunk).readlines()
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        yield from lines
        if len(pending) > max_line:
            yield pending[: max_line + 1]
            pending, skipping = b"", True
    if pending:
        yield pending


def capped_lines(handle: IO[bytes] | Any) -> Iterator[bytes]:
    """An input file's lines with their endings, any line over ``MAX_LINE_BYTES`` cut short."""
    return bounded_lines(handle.read, MAX_LINE_BYTES)
