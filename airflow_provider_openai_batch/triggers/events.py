"""The JSON-safe events the trigger sends and the operators and sensor read back, in one place."""

from __future__ import annotations

from typing import Any

import msgspec

from airflow_provider_openai_batch.core.handoffs import BatchRef
from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.exceptions import BatchLostError

# Batch-level errors kept in an event: enough to show the user, bounded so events stay small.
MAX_EVENT_ERRORS = 100


_BATCH_FIELDS = (
    "id",
    "status",
    "endpoint",
    "model",
    "input_file_id",
    "output_file_id",
    "error_file_id",
    "created_at",
    "completed_at",
    "request_counts",
    "usage",
    "metadata",
)


def batch_ref(batch: Any) -> BatchRef:
    """The fields of a Batch that later steps need: ids, status, counts, usage, errors (bounded)."""
    data = batch.model_dump(mode="json", exclude_none=True)
    errors = (data.get("errors") or {}).get("data") or []
    fields = {key: data[key] for key in _BATCH_FIELDS if key in data}
    return BatchRef.from_json({**fields, "errors": errors[:MAX_EVENT_ERRORS], "errors_total": len(errors)})


def batch_summary(batch: Any) -> dict[str, Any]:
    """``batch_ref`` as JSON, for a trigger event or an XCom."""
    return batch_ref(batch).to_json()


def batch_event(batch: Any) -> dict[str, Any]:
    return {"status": batch.status, "batch_id": batch.id, "batch": batch_summary(batch)}


def error_event(batch_id: str, message: str) -> dict[str, Any]:
    return {"status": "error", "batch_id": batch_id, "message": message}


def timeout_event(batch_id: str, deadline: float | None, batch_status: str | None = None) -> dict[str, Any]:
    return {"status": "timeout", "batch_id": batch_id, "deadline": deadline, "batch_status": batch_status}


KNOWN_EVENT_STATUSES = TERMINAL_STATUSES | {"error", "timeout"}


class BatchEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A trigger event as the operators and the sensor read it: a batch's end, an error or a timeout."""

    status: str
    batch_id: str
    batch: dict[str, Any] | None = None  # an ended batch's summary (``batch_summary``)
    message: str | None = None  # an error's
    deadline: float | None = None  # a timeout's
    batch_status: str | None = None  # a timeout's: the status the batch was still in

    def ended(self) -> BatchRef:
        """The ended batch (the event of a terminal status always carries it)."""
        if self.batch is None:
            raise BatchLostError(f"trigger event for batch {self.batch_id} has no batch", batch_id=self.batch_id)
        return BatchRef.from_json(self.batch)


def check_event(event: Any) -> BatchEvent:
    """Read an event back; refuse one we did not make: an unknown status must fail loudly, not pass as success."""
    try:
        read = msgspec.convert(event, BatchEvent, strict=False)
    except msgspec.ValidationError:
        read = None
    if read is None or read.status not in KNOWN_EVENT_STATUSES or not read.batch_id:
        batch_id = event.get("batch_id") if isinstance(event, dict) else None
        raise BatchLostError(
            f"unexpected trigger event: {event!r}", batch_id=batch_id if isinstance(batch_id, str) else None
        )
    return read


def failure_message(batch: BatchRef, path: str | None = None) -> str:
    """A failed batch's errors, one per line, as ``path:line: [code] message`` when OpenAI gave a line."""
    lines = [
        f"  {path or 'line'}:{e['line']}: [{e.get('code')}] {e.get('message')}"
        if e.get("line")
        else f"  [{e.get('code')}] {e.get('message')}"
        for e in batch.errors
    ]
    total = max(batch.errors_total, len(batch.errors))
    if total > len(batch.errors):
        lines.append(f"  ... and {total - len(batch.errors)} more")
    return f"Batch {batch.id} failed with {total} error(s):\n" + "\n".join(lines)
