"""psycopg 3's ``COPY`` sent from a short queue on a helper thread, so memory stays bounded.

The results load makes CSV on its own thread while the previous chunks are sent. psycopg's
``QueuedLibpqWriter`` does the same but queues up to 1,024 chunks (128 MiB) and has no public way
to shorten its queue; this writer builds on the public ``LibpqWriter`` and queues a few MiB.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from psycopg.copy import LibpqWriter

QUEUE_CHUNKS = 64  # at most 8 MiB waiting to be sent
CHUNK_BYTES = 128 * 1024  # the most psycopg hands libpq at once


class QueuedCopyWriter(LibpqWriter):
    """
    A ``LibpqWriter`` whose ``write`` queues the data for a sender thread and returns.

    Data is queued in chunks of at most ``CHUNK_BYTES``, ``depth`` of them at most: a producer
    faster than the connection waits instead of growing the queue.

    :param cursor: the cursor running the ``COPY``.
    :param depth: chunks queued at most.
    """

    def __init__(self, cursor: Any, *, depth: int = QUEUE_CHUNKS) -> None:
        super().__init__(cursor)
        self._chunks: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._sender: threading.Thread | None = None
        self._send_error: BaseException | None = None

    def write(self, data: Any) -> None:
        if self._sender is None:
            self._sender = threading.Thread(target=self._send, name="copy-sender", daemon=True)
            self._sender.start()
        if self._send_error is not None:
            raise self._send_error
        if len(data) <= CHUNK_BYTES:
            self._chunks.put(data)
            return
        for start in range(0, len(data), CHUNK_BYTES):
            self._chunks.put(data[start : start + CHUNK_BYTES])

    def _send(self) -> None:
        """On the sender thread: pass each chunk to the connection until the empty end marker."""
        try:
            while chunk := self._chunks.get():
                super().write(chunk)
        except BaseException as err:  # raised to the producer on its next write, or by finish
            self._send_error = err
            while self._chunks.get():  # keep taking, or a producer blocked on a full queue waits forever
                pass

    def finish(self, exc: BaseException | None = None) -> None:
        """Send what is queued, then end the ``COPY`` (with ``exc``'s message, if the producer failed)."""
        self._chunks.put(b"")
        if self._sender is not None:
            self._sender.join()
            self._sender = None
        if self._send_error is not None:
            raise self._send_error
        super().finish(exc)
