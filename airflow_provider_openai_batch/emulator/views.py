"""Records as the JSON objects the API returns (``Batch``, ``FileObject``, list pages)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.emulator.records import BatchRecord, FileRecord

_TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def file_view(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "expires_at": _seconds(record.expires_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "status_details": None,
    }


def batch_view(record: BatchRecord) -> dict[str, Any]:
    """The ``Batch`` object; result file ids appear with the final status, as on OpenAI."""
    outcome = record.outcome
    published = record.status in TERMINAL_STATUSES
    return {
        "id": record.id,
        "object": "batch",
        "endpoint": record.endpoint,
        "model": record.model,
        "errors": _errors_view(record),
        "input_file_id": record.input_file_id,
        "completion_window": record.completion_window,
        "status": record.status,
        "output_file_id": outcome.output_file_id if published else None,
        "error_file_id": outcome.error_file_id if published else None,
        "created_at": int(record.created_at),
        "expires_at": int(record.expires_at),
        **{name: _seconds(getattr(record, name)) for name in _TIMESTAMPS},
        "request_counts": {"total": record.total, "completed": outcome.completed, "failed": outcome.failed},
        "usage": {
            "input_tokens": outcome.usage.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": outcome.usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": outcome.usage.input_tokens + outcome.usage.output_tokens,
        },
        "metadata": record.metadata,
    }


def _errors_view(record: BatchRecord) -> dict[str, Any] | None:
    if not record.errors:
        return None
    data = [{"code": e.code, "message": e.message, "param": e.param, "line": e.line} for e in record.errors]
    return {"object": "list", "data": data}


def page_view(items: Sequence[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": list(items),
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }
