"""Running a batch's requests and writing its output and error files.

Requests are visited in a shuffled order (seeded per batch), like the real service whose result
lines come back out of input order. The input is read one line at a time by byte offset and
each result line is written as soon as it is made, so memory stays flat for any file size.
The first ``done`` requests of that order are answered; the rest, when a batch expired or was
cancelled, get an error line with ``response: null``.
"""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import msgspec

from airflow_provider_openai_batch.core.limits import BATCH_CANCELLED, BATCH_EXPIRED
from airflow_provider_openai_batch.emulator.answers import Answer, answer, error_answer
from airflow_provider_openai_batch.emulator.records import BatchRecord, FileRecord, Outcome, TokenUsage
from airflow_provider_openai_batch.emulator.replies import digest_int
from airflow_provider_openai_batch.emulator.scan import line_offsets, read_line_at
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings
from airflow_provider_openai_batch.emulator.store import Store

LEFTOVER_MESSAGES = {
    BATCH_EXPIRED: "This request could not be executed before the completion window expired.",
    BATCH_CANCELLED: "This request was not executed because the batch was cancelled.",
}
_FAILURE_SCALE = 1_000_000


def process_batch(
    record: BatchRecord, store: Store, settings: EmulatorSettings, done: int, leftover_code: str | None
) -> Outcome:
    """Answer the first ``done`` requests (shuffled order); the rest get ``leftover_code`` lines."""
    offsets = line_offsets(record.input_path)
    order = list(range(len(offsets)))
    random.Random(f"{settings.seed}:{record.id}").shuffle(order)
    now = int(time.time())
    counts = {"completed": 0, "failed": 0}
    usage = TokenUsage()
    with (
        record.input_path.open("rb") as source,
        _ResultFile(store, record, "output") as outputs,
        _ResultFile(store, record, "error") as errors,
    ):
        for position, index in enumerate(order):
            request = read_line_at(source, offsets[index])
            prompt = record.prompt_tokens[index] if record.prompt_tokens is not None else None
            result = _run(record, settings, request, now, prompt) if position < done else None
            ok = result is not None and result.status_code == 200
            (outputs if ok else errors).write(_result_line(record, request, result, leftover_code))
            counts["completed" if ok else "failed"] += 1
            usage += result.usage if ok and result is not None else TokenUsage()
    return Outcome(counts["completed"], counts["failed"], usage, outputs.file_id, errors.file_id)


def _request_key(record: BatchRecord, custom_id: str) -> str:
    return hashlib.sha256(f"{record.id}|{custom_id}".encode()).hexdigest()[:24]


def _run(
    record: BatchRecord, settings: EmulatorSettings, request: dict[str, Any], now: int, prompt: int | None
) -> Answer:
    """One request's answer, or a 4xx/5xx failure when the failure-rate knob picks it."""
    draw = digest_int(f"{settings.seed}|fail|{request['custom_id']}")
    if draw % _FAILURE_SCALE < settings.request_failure_rate * _FAILURE_SCALE:
        return _failure(draw)
    return answer(record.endpoint, request["body"], _request_key(record, request["custom_id"]), now, prompt)


def _failure(draw: int) -> Answer:
    if draw % 2:
        return error_answer(400, "Emulated request failure (request_failure_rate).", "invalid_request_error")
    message = "The server had an error processing your request (emulated by request_failure_rate)."
    return error_answer(500, message, "server_error")


def _result_line(
    record: BatchRecord, request: dict[str, Any], result: Answer | None, leftover_code: str | None
) -> dict[str, Any]:
    key = _request_key(record, request["custom_id"])
    line: dict[str, Any] = {"id": f"batch_req_{key}", "custom_id": request["custom_id"]}
    if result is None:
        code = leftover_code or BATCH_EXPIRED
        return {**line, "response": None, "error": {"code": code, "message": LEFTOVER_MESSAGES[code]}}
    response = {"status_code": result.status_code, "request_id": f"req_{key}", "body": result.body}
    return {**line, "response": response, "error": None}


class _ResultFile:
    """A result file created on its first line and registered in the store when closed."""

    def __init__(self, store: Store, record: BatchRecord, kind: str) -> None:
        self.store = store
        self.record = record
        self.kind = kind
        self.file_id: str | None = None
        self._path: Path | None = None
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> _ResultFile:
        return self

    def write(self, line: dict[str, Any]) -> None:
        if self._handle is None:
            self.file_id, self._path = self.store.new_file_path()
            self._handle = self._path.open("wb")
        self._handle.write(msgspec.json.encode(line) + b"\n")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._handle is None or self._path is None or self.file_id is None:
            return
        self._handle.close()
        if error is not None:
            self._path.unlink(missing_ok=True)
            self.file_id = None
            return
        self.store.add_file(self._file_record(self.file_id, self._path))

    def _file_record(self, file_id: str, path: Path) -> FileRecord:
        now = time.time()
        seconds = self.record.output_expires_seconds
        name = f"{self.record.id}_{self.kind}.jsonl"
        size = path.stat().st_size
        return FileRecord(file_id, name, "batch_output", size, now, path, now + seconds if seconds else None)
