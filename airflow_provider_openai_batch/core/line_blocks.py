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
from collections.abc import Callable, Iterable, Iterator
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
