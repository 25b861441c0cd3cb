"""The trigger against the emulator: events are read with ``run().__anext__()`` as the triggerer would."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from airflow_provider_openai_batch.core.polling import FIRST_READ_AFTER
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers import batch as batch_trigger
from airflow_provider_openai_batch.triggers.batch import QUIET_POLLS_PER_LINE, OpenAIBatchTrigger
from tests.conftest import TEST_API_KEY
from tests.unit.operators.test_submit import knobs


def line(custom_id: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


@pytest.fixture
def batch_id(openai_conn, tmp_path) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text(line("a") + "\n" + line("b") + "\n")
    hook = OpenAIBatchHook(openai_conn)
    return hook.create_batch(input_file_id=hook.upload_file(path).id, endpoint="/v1/chat/completions").id


@pytest.fixture
def no_retry_conn(emulator, monkeypatch) -> str:
    """A connection whose client does not retry, so the trigger's own error budget is what is tested."""
    conn = {
        "conn_type": "openai_batch",
        "host": emulator.base_url,
        "password": TEST_API_KEY,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_NO_RETRY", json.dumps(conn))
    return "no_retry"


async def first_event(trigger: OpenAIBatchTrigger):
    return (await asyncio.wait_for(trigger.run().__anext__(), 10)).payload


def test_serialize_round_trips_and_carries_no_secret():
    trigger = OpenAIBatchTrigger("batch_1", "openai_default", poll_interval=5, deadline=1234.5, created_at=1000)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_openai_batch.triggers.batch.OpenAIBatchTrigger"
    assert OpenAIBatchTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["deadline"] == 1234.5
    assert kwargs["created_at"] == 1000  # a rebuilt trigger keeps the batch's schedule
    assert TEST_API_KEY not in json.dumps(kwargs)


async def test_completed_batch_yields_its_summary(batch_id, openai_conn):
    event = await first_event(OpenAIBatchTrigger(batch_id, openai_conn, poll_interval=0.05))
    assert event["status"] == "completed"
    assert event["batch_id"] == batch_id
    assert event["batch"]["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert event["batch"]["output_file_id"]


async def test_progress_is_logged_at_each_poll(batch_id, openai_conn, capsys):
    # Airflow's structlog writes task and trigger logs to stdout outside a real triggerer.
    await first_event(OpenAIBatchTrigger(batch_id, openai_conn, poll_interval=0.05))
    progress = [line for line in capsys.readouterr().out.splitlines() if f"batch {batch_id}: " in line]
    assert progress
    assert "2 completed / 0 failed of 2 (100.0%), ETA" in progress[-1]


async def test_deadline_in_the_past_yields_timeout(batch_id, openai_conn, emulator):
    emulator.update_settings(in_progress_seconds=30)
    try:
        event = await first_event(OpenAIBatchTrigger(batch_id, openai_conn, poll_interval=0.05, deadline=time.time()))
    finally:
        emulator.update_settings(in_progress_seconds=0.05)
    assert event["status"] == "timeout"


async def test_unknown_batch_is_a_permanent_error(openai_conn):
    event = await first_event(OpenAIBatchTrigger("batch_does_not_exist", openai_conn, poll_interval=0.05))
    assert event["status"] == "error"
    assert "404" in event["message"]


async def test_persistent_server_errors_give_up_after_the_budget(batch_id, no_retry_conn, emulator):
    emulator.update_settings(http_500_rate=1.0)
    try:
        event = await first_event(
            OpenAIBatchTrigger(batch_id, no_retry_conn, poll_interval=0.01, max_consecutive_errors=3)
        )
    finally:
        emulator.update_settings(http_500_rate=0.0)
    assert event["status"] == "error"
    assert event["message"].startswith("3 consecutive API errors")


async def test_transient_errors_below_the_budget_are_tolerated(batch_id, no_retry_conn, emulator):
    emulator.update_settings(http_429_rate=0.5, seed=3)
    try:
        event = await first_event(
            OpenAIBatchTrigger(batch_id, no_retry_conn, poll_interval=0.01, max_consecutive_errors=20)
        )
    finally:
        emulator.update_settings(http_429_rate=0.0)
    assert event["status"] == "completed"


async def test_on_kill_cancels_the_batch(batch_id, openai_conn, emulator):
    emulator.update_settings(in_progress_seconds=30)
    try:
        await OpenAIBatchTrigger(batch_id, openai_conn).on_kill()
        status = OpenAIBatchHook(openai_conn).get_batch(batch_id).status
    finally:
        emulator.update_settings(in_progress_seconds=0.05)
    assert status in ("cancelling", "cancelled")


async def test_triggers_on_one_loop_share_one_client_per_connection(openai_conn, no_retry_conn):
    first = await OpenAIBatchHook(openai_conn).get_shared_async_client()
    assert await OpenAIBatchHook(openai_conn).get_shared_async_client() is first
    assert await OpenAIBatchHook(no_retry_conn).get_shared_async_client() is not first


async def quiet_wait(batch_id, openai_conn, emulator, capsys, monkeypatch) -> tuple[list, list[str]]:
    """Wait a second on a batch that stays in progress; the polls made and the progress lines written."""
    client = await OpenAIBatchHook(openai_conn).get_shared_async_client()  # the one the trigger will use
    polls = []
    retrieve = client.batches.retrieve

    async def counted(*args, **kwargs):
        polls.append(args)
        return await retrieve(*args, **kwargs)

    monkeypatch.setattr(client.batches, "retrieve", counted)
    emulator.update_settings(in_progress_seconds=30)
    try:
        trigger = OpenAIBatchTrigger(batch_id, openai_conn, poll_interval=0.01, deadline=time.time() + 1.0)
        event = await first_event(trigger)
    finally:
        emulator.update_settings(in_progress_seconds=0.05)
    assert event["status"] == "timeout"
    assert len(polls) > 2 * QUIET_POLLS_PER_LINE
    return polls, [line for line in capsys.readouterr().out.splitlines() if f"batch {batch_id}: in_progress" in line]


async def test_every_poll_writes_a_progress_line_even_when_nothing_changed(
    batch_id, openai_conn, emulator, capsys, monkeypatch
):
    polls, progress = await quiet_wait(batch_id, openai_conn, emulator, capsys, monkeypatch)
    # one line per poll answered; the deadline may cut the last read short, before its line
    assert len(polls) - 1 <= len(progress) <= len(polls)


async def test_on_a_crowded_triggerer_polls_that_change_nothing_write_a_line_only_now_and_then(
    batch_id, openai_conn, emulator, capsys, monkeypatch
):
    monkeypatch.setattr(batch_trigger, "EVERY_POLL_UP_TO", 0)  # as if the board swept more batches than that
    polls, progress = await quiet_wait(batch_id, openai_conn, emulator, capsys, monkeypatch)
    assert 2 <= len(progress) <= len(polls) // QUIET_POLLS_PER_LINE + 1


async def counted_reads(openai_conn, monkeypatch) -> list[float]:
    """The times the trigger's shared client reads a batch by id."""
    client = await OpenAIBatchHook(openai_conn).get_shared_async_client()
    reads: list[float] = []
    retrieve = client.batches.retrieve

    async def counted(*args, **kwargs):
        reads.append(time.time())
        return await retrieve(*args, **kwargs)

    monkeypatch.setattr(client.batches, "retrieve", counted)
    return reads


async def test_a_batch_ending_before_its_first_scheduled_read_is_read_once_at_its_turn(
    openai_conn, emulator, tmp_path, monkeypatch
):
    reads = await counted_reads(openai_conn, monkeypatch)
    hook = OpenAIBatchHook(openai_conn)
    with knobs(emulator, in_progress_seconds=1.0):
        path = tmp_path / "in.jsonl"
        path.write_text(line("a") + "\n")
        batch = hook.create_batch(input_file_id=hook.upload_file(path).id, endpoint="/v1/chat/completions")
        trigger = OpenAIBatchTrigger(batch.id, openai_conn, poll_interval=60, created_at=batch.created_at)
        event = await first_event(trigger)
    assert event["status"] == "completed"
    # One read, not before the schedule's first (the emulator's created_at is whole seconds).
    assert len(reads) == 1
    assert reads[0] >= batch.created_at + FIRST_READ_AFTER
