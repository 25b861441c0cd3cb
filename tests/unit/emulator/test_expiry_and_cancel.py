"""Expired and cancelled batches: partial output, the rest as batch_expired / batch_cancelled lines."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.unit.emulator.helpers import Batches, chat_line

LINES = [chat_line(f"r{i}", f"text {i}") for i in range(10)]
RUNNING = frozenset({"in_progress"})


def test_batch_expires_after_n_requests_with_batch_expired_lines(server: EmulatorServer, batches: Batches):
    server.update_settings(expire_after_requests=4)

    batch = batches.run(LINES)

    outputs, errors = batches.lines(batch.output_file_id), batches.lines(batch.error_file_id)
    assert batch.status == "expired" and batch.expired_at is not None
    assert batch.request_counts.model_dump() == {"total": 10, "completed": 4, "failed": 6}
    assert len(outputs) == 4 and all(line["response"]["status_code"] == 200 for line in outputs)
    assert len(errors) == 6
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired" for line in errors)
    assert {line["custom_id"] for line in outputs + errors} == {line["custom_id"] for line in LINES}


def test_cancel_goes_through_cancelling_to_cancelled_with_partial_output(
    client: OpenAI, server: EmulatorServer, batches: Batches
):
    server.update_settings(in_progress_seconds=60, cancelling_seconds=0.1, cancel_completed_fraction=0.5)
    running = batches.wait(batches.submit(LINES).id, until=RUNNING)

    cancelling = client.batches.cancel(running.id)
    cancelled = batches.wait(running.id)

    outputs, errors = batches.lines(cancelled.output_file_id), batches.lines(cancelled.error_file_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert cancelling.output_file_id is None
    assert cancelled.status == "cancelled" and cancelled.cancelled_at >= cancelled.cancelling_at
    assert cancelled.request_counts.model_dump() == {"total": 10, "completed": 5, "failed": 5}
    assert len(outputs) == 5
    assert all(line["response"] is None and line["error"]["code"] == "batch_cancelled" for line in errors)
    assert len(errors) == 5


def test_cancel_soon_after_start_keeps_the_share_of_time_elapsed(
    client: OpenAI, server: EmulatorServer, batches: Batches
):
    server.update_settings(in_progress_seconds=60)
    running = batches.wait(batches.submit(LINES).id, until=RUNNING)

    client.batches.cancel(running.id)
    cancelled = batches.wait(running.id)

    assert cancelled.request_counts.completed == 0
    assert cancelled.output_file_id is None
    assert len(batches.lines(cancelled.error_file_id)) == 10


def test_cancel_while_validating_has_no_results(client: OpenAI, server: EmulatorServer, batches: Batches):
    server.update_settings(validating_seconds=60)
    created = batches.submit(LINES)

    client.batches.cancel(created.id)
    cancelled = batches.wait(created.id)

    assert cancelled.status == "cancelled"
    assert (cancelled.output_file_id, cancelled.error_file_id, cancelled.in_progress_at) == (None, None, None)


def test_cancelling_twice_returns_the_cancelling_batch(client: OpenAI, server: EmulatorServer, batches: Batches):
    server.update_settings(in_progress_seconds=60, cancelling_seconds=60)
    running = batches.wait(batches.submit(LINES).id, until=RUNNING)

    first = client.batches.cancel(running.id)
    second = client.batches.cancel(running.id)

    assert first.status == second.status == "cancelling"
    assert first.cancelling_at == second.cancelling_at


def test_cancelling_a_finished_batch_is_a_409(client: OpenAI, batches: Batches):
    finished = batches.run(LINES[:1])

    with pytest.raises(openai.ConflictError) as raised:
        client.batches.cancel(finished.id)

    assert "completed" in raised.value.body["message"]
