"""The COPY writer's queue is short: a producer faster than the connection waits, and nothing is lost or reordered."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from psycopg.copy import LibpqWriter

from airflow_provider_openai_batch.sinks.copy_writer import CHUNK_BYTES, QueuedCopyWriter


class Connection:
    """Stands in for libpq: records what ``LibpqWriter`` would send, optionally held or failing."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> None:
        self.sent: list[bytes] = []
        self.ended_with: list[BaseException | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on = fail_on
        monkeypatch.setattr(LibpqWriter, "write", lambda _writer, data: self.send(data))
        monkeypatch.setattr(LibpqWriter, "finish", lambda _writer, exc=None: self.ended_with.append(exc))

    def send(self, data: bytes) -> None:
        self.gate.wait()
        if len(self.sent) == self.fail_on:
            raise OSError("connection reset")
        self.sent.append(bytes(data))


def writer(depth: int = 64) -> QueuedCopyWriter:
    return QueuedCopyWriter(SimpleNamespace(connection=SimpleNamespace(pgconn=None)), depth=depth)  # type: ignore[arg-type]


def test_a_producer_faster_than_the_connection_waits_for_the_short_queue(monkeypatch):
    connection = Connection(monkeypatch)
    connection.gate.clear()  # the connection takes the first chunk and stalls
    copy = writer(depth=2)
    written: list[int] = []

    def produce() -> None:
        for n in range(10):
            copy.write(b"%d," % n)
            written.append(n)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    assert len(written) == 3  # one being sent and two queued; the fourth write waits
    connection.gate.set()
    producer.join(timeout=5)
    copy.finish()
    assert b"".join(connection.sent) == b"".join(b"%d," % n for n in range(10))
    assert connection.ended_with == [None]


def test_a_large_write_is_queued_in_chunks_that_rejoin_to_the_data(monkeypatch):
    connection = Connection(monkeypatch)
    data = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 7)
    copy = writer()
    copy.write(data)
    copy.finish()
    assert [len(chunk) for chunk in connection.sent] == [CHUNK_BYTES] * 3 + [7 * 256]
    assert b"".join(connection.sent) == data


def test_a_send_error_reaches_the_producer_and_the_copy_is_not_ended(monkeypatch):
    connection = Connection(monkeypatch, fail_on=1)
    copy = writer(depth=1)

    def produce() -> None:
        for _ in range(100):
            copy.write(b"row\n")

    with pytest.raises(OSError, match="connection reset"):  # never a producer stuck on a full queue
        produce()
    with pytest.raises(OSError, match="connection reset"):
        copy.finish()
    assert connection.sent == [b"row\n"] and connection.ended_with == []


def test_a_failed_producer_ends_the_copy_with_its_error_after_the_queued_data(monkeypatch):
    connection = Connection(monkeypatch)
    copy = writer()
    copy.write(b"row\n")
    failure = RuntimeError("the source broke halfway")
    copy.finish(failure)
    assert connection.sent == [b"row\n"] and connection.ended_with == [failure]
