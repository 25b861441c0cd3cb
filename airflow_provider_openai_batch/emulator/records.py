"""The emulator's own records of files and batches: frozen, replaced whole on every change.

Times are kept as float seconds so sub-second state durations work; the API views round them
down to the integer seconds OpenAI returns.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_openai_batch.core.limits import BatchStatus


@dataclass(frozen=True)
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    path: Path
    expires_at: float | None = None


@dataclass(frozen=True)
class LineError:
    """One entry of ``batch.errors.data``: why the service refused the input file."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class TokenUsage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)


@dataclass(frozen=True)
class Outcome:
    """What processing a batch produced: counts, usage and the result files (if any)."""

    completed: int = 0
    failed: int = 0
    usage: TokenUsage = TokenUsage()
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass(frozen=True)
class BatchRecord:
    id: str
    input_file_id: str
    # A hard link (or copy) of the input file, so deleting the file does not break the batch.
    input_path: Path
    endpoint: str
    completion_window: str
    created_at: float
    expires_at: float
    metadata: dict[str, str] | None = None
    output_expires_seconds: int | None = None
    status: BatchStatus = "validating"
    model: str | None = None
    total: int = 0
    enqueued_tokens: int = 0
    # Each request's prompt tokens, counted once by the scan and dropped once the batch is processed.
    prompt_tokens: array[int] | None = None
    outcome: Outcome = Outcome()
    errors: tuple[LineError, ...] = ()
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
