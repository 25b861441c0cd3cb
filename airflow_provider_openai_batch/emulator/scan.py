"""Streamed checks of a batch input file, the ones OpenAI runs while a batch is ``validating``.

The file is read one line at a time; only the set of ``custom_id`` values seen so far is kept,
which the duplicate check needs. Blank lines are skipped but still counted for line numbers
(1-based, as in ``errors.data[].line``).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from airflow_provider_openai_batch.core.limits import (
    DUPLICATE_CUSTOM_ID,
    EMPTY_FILE,
    INVALID_JSON_LINE,
    MAX_CUSTOM_ID_LENGTH,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MODEL_MISMATCH,
    TOO_MANY_TASKS,
    URL_MISMATCH,
)
from airflow_provider_openai_batch.emulator.answers import DEFAULT_MODERATION_MODEL
from airflow_provider_openai_batch.emulator.records import LineError
from airflow_provider_openai_batch.emulator.tokens import prompt_tokens

# Enough to show a pattern of bad lines without building a huge ``errors`` list.
MAX_REPORTED_ERRORS = 20
# Codes for a malformed request line (the service's own words for these are not documented).
MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
INVALID_VALUE = "invalid_value"


@dataclass(frozen=True)
class ScanResult:
    count: int
    model: str | None
    enqueued_tokens: int
    errors: tuple[LineError, ...]
    # Each request's prompt tokens, in file order (complete only when there are no errors).
    prompt_tokens: array[int]


def iter_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(line_number, byte_offset, raw)`` for every non-blank line of the file."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, offset, raw
            offset += len(raw)


def line_offsets(path: Path) -> array[int]:
    """Byte offsets of the request lines, so the processor can visit them in shuffled order."""
    return array("q", (offset for _, offset, _ in iter_lines(path)))


def read_line_at(handle: Any, offset: int) -> dict[str, Any]:
    handle.seek(offset)
    decoded: dict[str, Any] = msgspec.json.decode(handle.readline())
    return decoded


class _Scanner:
    def __init__(self, endpoint: str, max_requests: int) -> None:
        self.endpoint = endpoint
        self.max_requests = max_requests
        self.seen: set[str] = set()
        self.count = 0
        self.model: str | None = None
        self.tokens = 0
        self.prompt_tokens = array("I")
        self.embedding_inputs = 0
        self.errors: list[LineError] = []

    def check(self, number: int, raw: bytes) -> None:
        try:
            request = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            request = None
        if not isinstance(request, dict):
            self.fail(INVALID_JSON_LINE, "This line is not parseable as valid JSON.", None, number)
            return
        problem = self.line_problem(request)
        if problem is not None:
            self.fail(*problem, number)
            return
        self.count += 1
        tokens = prompt_tokens(self.endpoint, request["body"])
        self.prompt_tokens.append(tokens)
        self.tokens += tokens
        self.count_embedding_inputs(request["body"])

    def line_problem(self, request: dict[str, Any]) -> tuple[str, str, str | None] | None:
        """The first thing wrong with one request line, as ``(code, message, param)``."""
        for key in ("custom_id", "method", "url", "body"):
            if key not in request:
                return MISSING_REQUIRED_PARAMETER, f"Missing required parameter: '{key}'.", key
        custom_id = request["custom_id"]
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID_LENGTH:
            message = f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID_LENGTH} characters."
            return INVALID_VALUE, message, "custom_id"
        if request["method"] != "POST":
            return INVALID_VALUE, "Only the POST method is supported in a batch.", "method"
        if not isinstance(request["body"], dict):
            return INVALID_VALUE, "body must be a JSON object.", "body"
        if custom_id in self.seen:
            return DUPLICATE_CUSTOM_ID, _DUPLICATE_MESSAGE, "custom_id"
        self.seen.add(custom_id)
        if request["url"] != self.endpoint:
            message = f"The url '{request['url']}' does not match the batch endpoint '{self.endpoint}'."
            return URL_MISMATCH, message, "url"
        return self.model_problem(request["body"])

    def model_problem(self, body: dict[str, Any]) -> tuple[str, str, str | None] | None:
        model = body.get("model", DEFAULT_MODERATION_MODEL if self.endpoint == "/v1/moderations" else None)
        if not isinstance(model, str):
            return None  # the request itself gets a 400 line when processed, as on OpenAI
        if self.model is None:
            self.model = model
        elif model != self.model:
            message = f"The model '{model}' differs from '{self.model}'; a batch file must use one model."
            return MODEL_MISMATCH, message, "body.model"
        return None

    def count_embedding_inputs(self, body: dict[str, Any]) -> None:
        if self.endpoint == "/v1/embeddings":
            inputs = body.get("input")
            one_token_array = isinstance(inputs, list) and all(isinstance(item, int) for item in inputs)
            many = isinstance(inputs, list) and not one_token_array
            self.embedding_inputs += len(inputs) if many and isinstance(inputs, list) else 1

    def fail(self, code: str, message: str, param: str | None, number: int | None) -> None:
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(code, message, param, number))

    def file_problems(self) -> None:
        if self.count == 0 and not self.errors:
            self.fail(EMPTY_FILE, "The batch input file is empty; it needs at least one request.", None, None)
        if self.embedding_inputs > MAX_EMBEDDING_INPUTS_PER_BATCH:
            message = (
                f"The batch has {self.embedding_inputs:,} embedding inputs, above the limit of "
                f"{MAX_EMBEDDING_INPUTS_PER_BATCH:,}. Split the file."
            )
            self.fail(TOO_MANY_TASKS, message, None, None)


_DUPLICATE_MESSAGE = (
    "The custom_id for this request is a duplicate of another request. "
    "The custom_id parameter must be unique for each request in a batch."
)


def scan_input(path: Path, endpoint: str, max_requests: int) -> ScanResult:
    """Check every line of a batch input file against the batch's endpoint and limits."""
    scanner = _Scanner(endpoint, max_requests)
    for number, _, raw in iter_lines(path):
        if scanner.count >= max_requests:
            message = f"The batch input file has more than {max_requests:,} requests, the limit. Split the file."
            scanner.fail(TOO_MANY_TASKS, message, None, None)
            break
        scanner.check(number, raw)
    scanner.file_problems()
    return ScanResult(scanner.count, scanner.model, scanner.tokens, tuple(scanner.errors), scanner.prompt_tokens)
