"""The batch lifecycle: validating -> in_progress -> finalizing -> completed, and the detours.

Nothing runs in the background. Each read advances a batch from its stored state to the state
the wall clock says it is in now, applying every transition at the time it was due (not at the
time of the read), so a batch nobody looked at for an hour has the same timestamps as one polled
every second. All of it happens under the store's lock, which makes concurrent reads safe; the
one heavy step, writing the result files, runs once per batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

from airflow_provider_openai_batch.core.limits import (
    BATCH_CANCELLED,
    BATCH_EXPIRED,
    TERMINAL_STATUSES,
    TOKEN_LIMIT_EXCEEDED,
)
from airflow_provider_openai_batch.emulator.errors import EmulatorAPIError, bad_request
from airflow_provider_openai_batch.emulator.params import BatchParams
from airflow_provider_openai_batch.emulator.processing import process_batch
from airflow_provider_openai_batch.emulator.records import BatchRecord, LineError
from airflow_provider_openai_batch.emulator.scan import scan_input
from airflow_provider_openai_batch.emulator.settings import ORGANIZATION, EmulatorSettings
from airflow_provider_openai_batch.emulator.store import Store, new_id

WINDOW_SECONDS = 24 * 3600
# Batches whose requests still count against the enqueued-token limit.
ENQUEUED_STATUSES = frozenset({"in_progress", "finalizing"})


class BatchEngine:
    """Creates, advances and cancels batch records kept in a ``Store``."""

    def __init__(
        self, store: Store, settings: Callable[[], EmulatorSettings], clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def create(self, params: BatchParams) -> BatchRecord:
        source = self.store.get_file(params.input_file_id, param="input_file_id")
        if source.purpose != "batch":
            raise bad_request(f"File {source.id} has purpose {source.purpose!r}, not 'batch'.", param="input_file_id")
        batch_id = new_id("batch_")
        now = self.clock()
        record = BatchRecord(
            id=batch_id,
            input_file_id=source.id,
            input_path=self.store.pin_input(source, batch_id),
            endpoint=params.endpoint,
            completion_window=params.completion_window,
            created_at=now,
            expires_at=now + WINDOW_SECONDS,
            metadata=params.metadata,
            output_expires_seconds=params.output_expires_seconds,
        )
        return self.store.put_batch(record)

    def get(self, batch_id: str) -> BatchRecord:
        with self.store.lock:
            return self._advance(self.store.get_batch(batch_id), self.clock())

    def page(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Newest first, starting after the batch ``after``; True when more remain."""
        with self.store.lock:
            ids = self.store.batch_ids_newest_first()
            start = ids.index(after) + 1 if after in ids else 0
            chosen = ids[start : start + limit]
            now = self.clock()
            return [self._advance(self.store.get_batch(i), now) for i in chosen], start + limit < len(ids)

    def cancel(self, batch_id: str) -> BatchRecord:
        with self.store.lock:
            now = self.clock()
            record = self._advance(self.store.get_batch(batch_id), now)
            if record.status in TERMINAL_STATUSES:
                raise EmulatorAPIError(409, f"Cannot cancel a batch with status '{record.status}'.")
            if record.status == "cancelling":
                return record
            if record.status == "in_progress":
                done = self._cancelled_progress(record, now)
                outcome = process_batch(record, self.store, self.settings(), done, BATCH_CANCELLED)
                record = replace(record, outcome=outcome, prompt_tokens=None)
            return self._save(replace(record, status="cancelling", cancelling_at=now))

    # The state machine

    def _advance(self, record: BatchRecord, now: float) -> BatchRecord:
        settings = self.settings()
        while (moved := self._step(record, now, settings)) is not None:
            record = self._save(moved)
        return record

    def _save(self, record: BatchRecord) -> BatchRecord:
        if record.status in TERMINAL_STATUSES:
            record.input_path.unlink(missing_ok=True)
        return self.store.put_batch(record)

    def _step(self, record: BatchRecord, now: float, settings: EmulatorSettings) -> BatchRecord | None:
        """The record's next state if that transition was due by ``now``, else None."""
        if record.status == "validating":
            due = record.created_at + settings.validating_seconds
            return self._validate(record, due, settings) if now >= due else None
        if record.status == "in_progress":
            return self._run(record, now, settings)
        if record.status == "finalizing" and record.finalizing_at is not None:
            due = record.finalizing_at + settings.finalizing_seconds
            return replace(record, status="completed", completed_at=due) if now >= due else None
        if record.status == "cancelling" and record.cancelling_at is not None:
            due = record.cancelling_at + settings.cancelling_seconds
            return replace(record, status="cancelled", cancelled_at=due) if now >= due else None
        return None

    def _validate(self, record: BatchRecord, at: float, settings: EmulatorSettings) -> BatchRecord:
        scan = scan_input(record.input_path, record.endpoint, settings.max_requests_per_file)
        errors = scan.errors or self._token_limit_errors(record, scan.model, scan.enqueued_tokens, at, settings)
        if errors:
            return replace(record, status="failed", failed_at=at, errors=errors, model=scan.model)
        return replace(
            record,
            status="in_progress",
            in_progress_at=at,
            model=scan.model,
            total=scan.count,
            enqueued_tokens=scan.enqueued_tokens,
            prompt_tokens=scan.prompt_tokens,
        )

    def _token_limit_errors(
        self, record: BatchRecord, model: str | None, tokens: int, at: float, settings: EmulatorSettings
    ) -> tuple[LineError, ...]:
        """Refuse the batch when it and the other active batches of its model pass the limit."""
        enqueued = tokens + sum(
            other.enqueued_tokens for other in self._enqueued_at(at) if other.model == model and other.id != record.id
        )
        if enqueued <= settings.enqueued_token_limit:
            return ()
        message = (
            f"Enqueued token limit reached for {model} in organization {ORGANIZATION}. "
            f"Limit: {settings.enqueued_token_limit:,} enqueued tokens. "
            "Please try again once some in_progress batches have been completed."
        )
        return (LineError(TOKEN_LIMIT_EXCEEDED, message),)

    def _enqueued_at(self, at: float) -> list[BatchRecord]:
        """Other batches holding enqueued tokens at time ``at``, each brought up to that time."""
        started = [
            b
            for b in self.store.batches()
            if b.status in ENQUEUED_STATUSES and b.in_progress_at is not None and b.in_progress_at <= at
        ]
        return [b for b in (self._advance(b, at) for b in started) if b.status in ENQUEUED_STATUSES]

    def _run(self, record: BatchRecord, now: float, settings: EmulatorSettings) -> BatchRecord | None:
        """Leave in_progress once its time is up: finalizing, or expired (knob or 24 h window)."""
        assert record.in_progress_at is not None
        end = record.in_progress_at + settings.in_progress_seconds
        cap = settings.expire_after_requests
        if cap is not None and cap < record.total and now >= end:
            return self._expire(record, end, cap, settings)
        if end > record.expires_at and now >= record.expires_at:
            return self._expire(
                record, record.expires_at, self._progress(record, record.expires_at, settings), settings
            )
        if now < end:
            return None
        outcome = process_batch(record, self.store, settings, record.total, None)
        return replace(record, status="finalizing", finalizing_at=end, outcome=outcome, prompt_tokens=None)

    def _expire(self, record: BatchRecord, at: float, done: int, settings: EmulatorSettings) -> BatchRecord:
        outcome = process_batch(record, self.store, settings, done, BATCH_EXPIRED)
        return replace(record, status="expired", expired_at=at, outcome=outcome, prompt_tokens=None)

    def _progress(self, record: BatchRecord, at: float, settings: EmulatorSettings) -> int:
        """Requests done by ``at``, in proportion to the in_progress time elapsed."""
        assert record.in_progress_at is not None
        if settings.in_progress_seconds <= 0:
            return record.total
        share = min(1.0, max(0.0, (at - record.in_progress_at) / settings.in_progress_seconds))
        return math.floor(record.total * share)

    def _cancelled_progress(self, record: BatchRecord, at: float) -> int:
        settings = self.settings()
        share = settings.cancel_completed_fraction
        done = self._progress(record, at, settings) if share is None else math.floor(record.total * share)
        cap = settings.expire_after_requests
        return min(done, cap) if cap is not None else done
