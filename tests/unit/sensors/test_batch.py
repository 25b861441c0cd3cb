"""OpenAIBatchSensor against the emulator, in poke, reschedule and deferrable modes."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, TaskDeferred

try:  # the Task SDK's exceptions module has it from Airflow 3.1; common-compat has no entry for it
    from airflow.sdk.exceptions import AirflowRescheduleException
except ImportError:
    from airflow.exceptions import AirflowRescheduleException  # type: ignore[no-redef]

from airflow_provider_openai_batch.core.polling import FIRST_READ_AFTER
from airflow_provider_openai_batch.exceptions import BatchFailedError, BatchIncompleteError, BatchLostError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.sensors.batch import ERRORS_KEY, OpenAIBatchSensor
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests.conftest import TEST_API_KEY
from tests.unit.operators.fakes import RecordingTI
from tests.unit.operators.test_submit import StateStore, first_event, knobs, make_shard, request


@dataclass
class SensorTI(RecordingTI):
    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def sensor_context(store: StateStore | None = None) -> dict[str, Any]:
    return {"ti": SensorTI(), "task_state_store": store if store is not None else StateStore()}


def submit(tmp_path, lines: list[str]) -> str:
    hook = OpenAIBatchHook()
    shard = make_shard(tmp_path, lines)
    return hook.create_batch(input_file_id=hook.upload_file(shard.path).id, endpoint=shard.endpoint).id


def sensor(batch_id: str, **kwargs: Any) -> OpenAIBatchSensor:
    return OpenAIBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=0.05, **kwargs)


def wait_until_status(batch_id: str, *statuses: str) -> None:
    deadline = time.monotonic() + 10
    while OpenAIBatchHook().get_batch(batch_id).status not in statuses:
        assert time.monotonic() < deadline, f"batch {batch_id} never reached {statuses}"
        time.sleep(0.05)


def fresh_sensor(batch_id: str, conn_id: str) -> OpenAIBatchSensor:
    return sensor(batch_id, conn_id=conn_id, max_consecutive_errors=3)


@pytest.fixture
def no_retry_conn(emulator, monkeypatch) -> str:
    conn = {"conn_type": "openai_batch", "host": emulator.base_url, "password": TEST_API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_NO_RETRY", json.dumps({**conn, "extra": {"max_retries": 0}}))
    return "no_retry"


def test_poke_mode_returns_the_summary_and_pushes_the_batch_id(openai_conn, tmp_path):
    batch_id = submit(tmp_path, [request("a"), request("b")])
    ctx = sensor_context()
    summary = sensor(batch_id, mode="poke").execute(ctx)
    assert summary["status"] == "completed"
    assert summary["request_counts"]["completed"] == 2
    assert ctx["ti"].pushed["batch_id"] == batch_id


def test_reschedule_mode_frees_the_slot_until_the_batch_ends(openai_conn, tmp_path, emulator):
    with knobs(emulator, in_progress_seconds=30):
        batch_id = submit(tmp_path, [request("a")])
        with pytest.raises(AirflowRescheduleException):
            sensor(batch_id, mode="reschedule").execute(sensor_context())
    wait_until_status(batch_id, "completed")
    assert sensor(batch_id, mode="reschedule").execute(sensor_context())["status"] == "completed"


def test_reschedule_mode_comes_back_on_the_read_schedule_not_after_the_whole_poke_interval(
    openai_conn, tmp_path, emulator
):
    with knobs(emulator, in_progress_seconds=30):
        batch_id = submit(tmp_path, [request("a")])
        young = OpenAIBatchSensor(task_id="wait", batch_id=batch_id, poke_interval=60, mode="reschedule")
        with pytest.raises(AirflowRescheduleException) as rescheduled:
            young.execute(sensor_context())
        backoff = OpenAIBatchSensor(
            task_id="wait", batch_id=batch_id, poke_interval=60, mode="reschedule", exponential_backoff=True
        )
        with pytest.raises(AirflowRescheduleException) as airflows:
            backoff.execute(sensor_context())
    # A batch seconds old is read again after the schedule's first step; Airflow's own backoff is kept on request.
    wait = (rescheduled.value.reschedule_date - datetime.now(UTC)).total_seconds()
    assert 0 < wait <= FIRST_READ_AFTER
    assert (airflows.value.reschedule_date - datetime.now(UTC)).total_seconds() > 2 * FIRST_READ_AFTER


def test_a_deferring_sensor_hands_the_batch_creation_time_to_the_trigger(openai_conn, tmp_path, emulator):
    with knobs(emulator, in_progress_seconds=30):
        batch_id = submit(tmp_path, [request("a")])
        with pytest.raises(TaskDeferred) as deferred:
            sensor(batch_id, deferrable=True).execute(sensor_context())
    assert deferred.value.trigger.created_at == OpenAIBatchHook().get_batch(batch_id).created_at


def test_deferrable_mode_defers_without_owning_the_batch(openai_conn, tmp_path, emulator):
    with knobs(emulator, in_progress_seconds=30):
        batch_id = submit(tmp_path, [request("a")])
        waiting = sensor(batch_id, deferrable=True, timeout=600)
        with pytest.raises(TaskDeferred) as deferred:
            waiting.execute(sensor_context())
        trigger = deferred.value.trigger
        assert isinstance(trigger, OpenAIBatchTrigger)
        assert trigger.cancel_on_kill is False
        assert trigger.deadline is not None and 590 < trigger.deadline - time.time() <= 600
        asyncio.run(trigger.on_kill())  # the user marks the sensor failed: someone else's batch runs on
        assert OpenAIBatchHook().get_batch(batch_id).status == "in_progress"
    wait_until_status(batch_id, "completed")
    event = asyncio.run(first_event(trigger))
    assert waiting.execute_complete(sensor_context(), event)["status"] == "completed"


def test_deferrable_mode_returns_at_once_for_a_batch_that_has_ended(openai_conn, tmp_path):
    batch_id = submit(tmp_path, [request("a")])
    wait_until_status(batch_id, "completed")
    assert sensor(batch_id, deferrable=True).execute(sensor_context())["status"] == "completed"


def test_a_timeout_event_fails_as_a_sensor_timeout_and_leaves_the_batch(openai_conn):
    event = {"status": "timeout", "batch_id": "batch_x", "deadline": 1.0, "batch_status": "in_progress"}
    with pytest.raises(AirflowSensorTimeout, match=r"still in_progress .* left running"):
        sensor("batch_x").execute_complete(sensor_context(), event)


def test_a_failed_batch_fails_the_sensor_with_the_line_numbers(openai_conn, tmp_path):
    batch_id = submit(tmp_path, [request("a"), "{not json"])
    with pytest.raises(BatchFailedError, match=r"line:2: \[invalid_json_line\]"):
        sensor(batch_id).execute(sensor_context())


@pytest.mark.parametrize(("allow_partial", "fails"), [(True, False), (False, True)])
def test_an_expired_batch_passes_only_when_partial_results_are_allowed(
    openai_conn, tmp_path, emulator, allow_partial, fails
):
    with knobs(emulator, expire_after_requests=1):
        batch_id = submit(tmp_path, [request("a"), request("b")])
        wait_until_status(batch_id, "expired")
    waiting = sensor(batch_id, allow_partial=allow_partial)
    if fails:
        with pytest.raises(BatchIncompleteError, match="ended expired"):
            waiting.execute(sensor_context())
    else:
        assert waiting.execute(sensor_context())["request_counts"]["completed"] == 1


def test_transient_errors_count_across_pokes_until_the_budget_is_spent(no_retry_conn, tmp_path, emulator):
    batch_id = submit(tmp_path, [request("a")])
    store = StateStore()
    with knobs(emulator, http_500_rate=1.0):
        # Reschedule mode runs each poke in a new process: a fresh sensor sharing only the store.
        for count in (1, 2):
            assert fresh_sensor(batch_id, no_retry_conn).poke(sensor_context(store)) is False
            assert store.values[ERRORS_KEY] == count
        with pytest.raises(BatchLostError, match="3 consecutive API errors"):
            fresh_sensor(batch_id, no_retry_conn).poke(sensor_context(store))
    assert fresh_sensor(batch_id, no_retry_conn).poke(sensor_context(store))
    assert ERRORS_KEY not in store.values


@pytest.mark.parametrize("deferrable", [False, True])
@pytest.mark.parametrize("batch_id", ["", "  "])
def test_an_empty_batch_id_says_what_is_missing_and_how_to_pass_it(openai_conn, batch_id, deferrable):
    sensor = OpenAIBatchSensor(task_id="wait", batch_id=batch_id, deferrable=deferrable, poke_interval=0.05)
    with pytest.raises(
        ValueError, match=r"'wait' has no batch_id to wait for .* batch_id=\"\{\{ params.batch_id \}\}\""
    ):
        sensor.execute({"ti": RecordingTI()})
