"""The submit operator against the emulator: deferral, re-attachment, and each way a wait can end."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.providers.standard.triggers.temporal import DateTimeTrigger

from airflow_provider_openai_batch.core.handoffs import ShardRef
from airflow_provider_openai_batch.core.polling import FIRST_READ_AFTER
from airflow_provider_openai_batch.exceptions import BatchFailedError, BatchLostError, BatchTimeoutError
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators import submit as submit_module
from airflow_provider_openai_batch.operators.batch_lifecycle import idempotency_key
from airflow_provider_openai_batch.operators.submit import STATE_KEY, OpenAIBatchSubmitOperator
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests.conftest import TEST_API_KEY
from tests.unit.operators.fakes import RecordingTI, context


def request(custom_id: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def make_shard(tmp_path, lines: list[str], index: int = 0) -> ShardRef:
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / f"shard-{index}.jsonl"
    path.write_bytes(data)
    return ShardRef(
        index=index,
        path=str(path),
        requests=len(lines),
        bytes=len(data),
        sha256=hashlib.sha256(data + str(time.time_ns()).encode()).hexdigest(),
        job_id=f"job-{time.time_ns()}",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
    )


@contextlib.contextmanager
def knobs(emulator, **changes: Any) -> Iterator[None]:
    """Turn emulator knobs for one block, then put back the values they had."""
    before = emulator.settings.to_dict()
    emulator.update_settings(**changes)
    try:
        yield
    finally:
        emulator.update_settings(**{name: before[name] for name in changes})


@dataclass
class StateStore:
    """A stand-in for Airflow's task state store: a dict behind its get / set / delete."""

    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def operator(shard: ShardRef | dict[str, Any], **kwargs) -> OpenAIBatchSubmitOperator:
    """The operator as a mapped task gets it: the shard as the JSON the build task's XCom holds."""
    value = shard.to_json() if isinstance(shard, ShardRef) else shard
    return OpenAIBatchSubmitOperator(task_id="submit", shard=value, poll_interval=0.05, **kwargs)


@pytest.fixture
def slow_batches(emulator):
    """Batches that stay in progress, so a second execute meets a batch that is still running."""
    emulator.update_settings(in_progress_seconds=30)
    yield
    emulator.update_settings(in_progress_seconds=0.05)


def batches_with_key(key: str) -> list:
    return [b for b in OpenAIBatchHook().list_batches() if (b.metadata or {}).get("idempotency_key") == key]


def test_submit_defers_to_the_trigger_after_pushing_the_batch_id(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a"), request("b")])
    op = operator(shard)
    ctx = context(map_index=3)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, OpenAIBatchTrigger)
    assert ctx["ti"].pushed["batch_id"] == trigger.batch_id
    assert trigger.deadline is not None and trigger.deadline > time.time()
    assert TEST_API_KEY not in json.dumps(trigger.serialize()[1])
    batch = OpenAIBatchHook().get_batch(trigger.batch_id)
    assert batch.metadata["airflow_map_index"] == "3"
    assert batch.metadata["idempotency_key"] == op.idempotency_key()
    assert trigger.created_at == batch.created_at  # the trigger's first read keeps to the schedule


def test_a_retry_reattaches_to_the_batch_it_already_created(openai_conn, tmp_path, slow_batches):
    shard = make_shard(tmp_path, [request("a")])
    first_ctx, retry_ctx = context(), context()
    with pytest.raises(TaskDeferred):
        operator(shard).execute(first_ctx)
    with pytest.raises(TaskDeferred):
        operator(shard).execute(retry_ctx)
    assert first_ctx["ti"].pushed["batch_id"] == retry_ctx["ti"].pushed["batch_id"]
    assert len(batches_with_key(operator(shard).idempotency_key())) == 1


def test_reattach_false_forces_a_new_batch(openai_conn, tmp_path, slow_batches):
    shard = make_shard(tmp_path, [request("a")])
    for _ in range(2):
        with pytest.raises(TaskDeferred):
            operator(shard, reattach=False).execute(context())
    assert len(batches_with_key(operator(shard).idempotency_key())) == 2


def test_completed_event_returns_a_summary_without_results(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a"), request("b")])
    op = operator(shard)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    batch = OpenAIBatchHook().get_batch(deferred.value.trigger.batch_id)
    while batch.status != "completed":
        time.sleep(0.05)
        batch = OpenAIBatchHook().get_batch(batch.id)
    from airflow_provider_openai_batch.triggers.events import batch_event

    result = op.execute_complete(context(), batch_event(batch))
    assert result["batch"]["request_counts"]["completed"] == 2
    assert result["shard"]["path"] == shard.path


def test_failed_batch_fails_the_task_with_openais_errors_and_line_numbers(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a"), "{not json", request("c")])
    with pytest.raises(BatchFailedError) as failure:
        operator(shard, deferrable=False).execute(context())
    message = str(failure.value)
    assert "failed with 1 error(s)" in message
    assert f"{shard.path}:2: [invalid_json_line]" in message


def test_non_deferrable_waits_on_the_worker(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    result = operator(shard, deferrable=False).execute(context())
    assert result["batch"]["status"] == "completed"


def test_timeout_event_cancels_the_batch_and_says_it_was_a_timeout(openai_conn, tmp_path, slow_batches):
    shard = make_shard(tmp_path, [request("a")])
    op = operator(shard)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    batch_id = deferred.value.trigger.batch_id
    event = {"status": "timeout", "batch_id": batch_id, "deadline": time.time(), "batch_status": "in_progress"}
    with pytest.raises(BatchTimeoutError, match="wait timeout, not a batch failure"):
        op.execute_complete(context(), event)
    assert OpenAIBatchHook().get_batch(batch_id).status in ("cancelling", "cancelled")


@pytest.mark.parametrize("event", [None, {}, {"status": "weird", "batch_id": "b"}, {"status": "completed"}])
def test_unknown_events_fail_loudly(event):
    with pytest.raises(BatchLostError, match="unexpected trigger event"):
        operator({"job_id": "j", "sha256": "0" * 64, "index": 0}).execute_complete(context(), event)


def test_too_much_user_metadata_is_refused_before_upload(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    op = operator(shard, metadata={f"k{i}": "v" for i in range(10)})
    with pytest.raises(ValueError, match="at most 9 of your own"):
        op.execute(context())


# -- helpers for the paths below --------------------------------------------------------------


@dataclass
class PullingTI(RecordingTI):
    """A task instance that can read back what it pushed, as resumed tasks do."""

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
        return self.pushed.get(key)


def stored_context(store: StateStore | None = None, **ti_fields: Any) -> dict[str, Any]:
    return {"ti": PullingTI(**ti_fields), "task_state_store": store if store is not None else StateStore()}


async def first_event(trigger: OpenAIBatchTrigger) -> dict[str, Any]:
    """The trigger's one event, as the triggerer reads it, closing the generator (and its client) after."""
    events = trigger.run()
    try:
        return (await asyncio.wait_for(events.__anext__(), 10)).payload
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def run_inline(op: OpenAIBatchSubmitOperator, ctx: dict[str, Any], before_timer=lambda: None) -> dict[str, Any]:
    """Play a deferrable operator to its end as ``dag.test()`` does: batch triggers run, timers are skipped."""
    step = functools.partial(op.execute, ctx)
    deferrals = 0
    while True:
        try:
            return step()
        except TaskDeferred as deferred:
            deferrals += 1
            assert deferrals < 10, "the operator keeps deferring"
            trigger, kwargs = deferred.trigger, deferred.kwargs or {}
            if isinstance(trigger, DateTimeTrigger):
                before_timer()
                event = None
            else:
                event = asyncio.run(first_event(trigger))
            step = functools.partial(getattr(op, deferred.method_name), ctx, event, **kwargs)


def wait_for_status(batch_id: str, *statuses: str) -> Any:
    deadline = time.monotonic() + 10
    while (batch := OpenAIBatchHook().get_batch(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, f"batch {batch_id} never reached {statuses}"
        time.sleep(0.05)
    return batch


# -- re-attaching through Airflow's task state store ------------------------------------------


def test_the_batch_is_recorded_in_the_task_state_before_deferring(openai_conn, tmp_path):
    store = StateStore()
    with pytest.raises(TaskDeferred) as deferred:
        operator(make_shard(tmp_path, [request("a")])).execute(stored_context(store))
    assert store.values[STATE_KEY] == {"batch_id": deferred.value.trigger.batch_id, "attempt": 0}


def test_a_retry_reattaches_to_the_batch_recorded_in_the_task_state(openai_conn, tmp_path, slow_batches):
    shard, store = make_shard(tmp_path, [request("a")]), StateStore()
    with pytest.raises(TaskDeferred) as first:
        operator(shard).execute(stored_context(store))
    # A newer batch under the same key: the metadata lookup would pick it, the task state must win.
    newer = operator(shard, reattach=False)
    with pytest.raises(TaskDeferred):
        newer.execute(stored_context())
    with pytest.raises(TaskDeferred) as retry:
        operator(shard).execute(stored_context(store))
    assert retry.value.trigger.batch_id == first.value.trigger.batch_id


def test_a_recorded_batch_of_another_job_is_not_reused(openai_conn, tmp_path, slow_batches):
    store = StateStore()
    with pytest.raises(TaskDeferred) as old:
        operator(make_shard(tmp_path, [request("a")])).execute(stored_context(store))
    new_job = make_shard(tmp_path, [request("a")])  # a new job_id: a deliberate new batch
    with pytest.raises(TaskDeferred) as new:
        operator(new_job).execute(stored_context(store))
    assert new.value.trigger.batch_id != old.value.trigger.batch_id
    assert store.values[STATE_KEY]["batch_id"] == new.value.trigger.batch_id


def test_a_recorded_batch_that_is_gone_falls_back_to_the_metadata_lookup(openai_conn, tmp_path, slow_batches):
    shard = make_shard(tmp_path, [request("a")])
    with pytest.raises(TaskDeferred) as first:
        operator(shard).execute(stored_context())
    store = StateStore({STATE_KEY: {"batch_id": "batch_deleted_long_ago", "attempt": 0}})
    with pytest.raises(TaskDeferred) as retry:
        operator(shard).execute(stored_context(store))
    assert retry.value.trigger.batch_id == first.value.trigger.batch_id
    assert len(batches_with_key(operator(shard).idempotency_key())) == 1


def test_reattach_false_ignores_the_task_state(openai_conn, tmp_path, slow_batches):
    shard, store = make_shard(tmp_path, [request("a")]), StateStore()
    with pytest.raises(TaskDeferred) as first:
        operator(shard).execute(stored_context(store))
    with pytest.raises(TaskDeferred) as forced:
        operator(shard, reattach=False).execute(stored_context(store))
    assert forced.value.trigger.batch_id != first.value.trigger.batch_id


# -- every way a batch ends --------------------------------------------------------------------


def test_an_expired_batch_passes_its_partial_results_on(openai_conn, tmp_path, emulator):
    with knobs(emulator, expire_after_requests=1):
        result = run_inline(operator(make_shard(tmp_path, [request("a"), request("b")])), stored_context())
    assert result["batch"]["status"] == "expired"
    assert result["batch"]["request_counts"]["completed"] == 1
    assert result["batch"]["output_file_id"] and result["batch"]["error_file_id"]


def test_a_cancelled_batch_passes_its_partial_results_on(openai_conn, tmp_path, emulator):
    with knobs(emulator, in_progress_seconds=30, cancel_completed_fraction=0.5):
        op = operator(make_shard(tmp_path, [request("a"), request("b")]))
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(stored_context())
        OpenAIBatchHook().cancel_batch(deferred.value.trigger.batch_id)
        event = asyncio.run(first_event(deferred.value.trigger))
    result = op.execute_complete(stored_context(), event)
    assert result["batch"]["status"] == "cancelled"
    assert result["batch"]["request_counts"]["completed"] == 1


def test_completed_with_every_request_failed_and_no_output_file_still_succeeds(openai_conn, tmp_path, emulator):
    with knobs(emulator, request_failure_rate=1.0):
        result = run_inline(operator(make_shard(tmp_path, [request("a"), request("b")])), stored_context())
    batch = result["batch"]
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert batch["output_file_id"] is None and batch["error_file_id"]


def test_a_lost_batch_fails_saying_so(openai_conn):
    event = {"status": "error", "batch_id": "batch_x", "message": "5 consecutive API errors: boom"}
    with pytest.raises(BatchLostError, match="Lost track of batch batch_x: 5 consecutive API errors"):
        operator({"job_id": "j", "sha256": "0" * 64, "index": 0}).execute_complete(stored_context(), event)


# -- token_limit_exceeded: wait, then resubmit --------------------------------------------------


def refused_for_tokens(emulator):
    return knobs(emulator, enqueued_token_limit=1)


def test_a_token_limit_refusal_waits_then_resubmits_the_same_file(openai_conn, tmp_path, emulator):
    shard = make_shard(tmp_path, [request("a")])
    op = operator(shard, token_limit_wait=timedelta(minutes=5))
    with refused_for_tokens(emulator):
        lift = functools.partial(emulator.update_settings, enqueued_token_limit=10**6)
        result = run_inline(op, stored_context(), before_timer=lift)
    assert result["batch"]["status"] == "completed"
    (refused,) = batches_with_key(idempotency_key(shard, 0))
    (resubmitted,) = batches_with_key(idempotency_key(shard, 1))
    assert refused.status == "failed" and refused.errors.data[0].code == "token_limit_exceeded"
    assert resubmitted.id == result["batch"]["id"]
    assert resubmitted.input_file_id == refused.input_file_id  # not uploaded again


def test_the_token_limit_wait_is_a_deferral_not_a_sleep(openai_conn, tmp_path, emulator):
    op = operator(make_shard(tmp_path, [request("a")]), token_limit_wait=timedelta(minutes=5))
    with refused_for_tokens(emulator):
        refused = run_until_timer(op)
    assert isinstance(refused.trigger, DateTimeTrigger)
    assert refused.method_name == "resubmit" and refused.kwargs["attempt"] == 1
    assert 290 < refused.trigger.moment.timestamp() - time.time() <= 300


def run_until_timer(op: OpenAIBatchSubmitOperator) -> TaskDeferred:
    ctx = stored_context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    event = asyncio.run(first_event(deferred.value.trigger))
    with pytest.raises(TaskDeferred) as timer:
        op.execute_complete(ctx, event, **deferred.value.kwargs)
    return timer.value


def test_token_limit_resubmissions_are_bounded(openai_conn, tmp_path, emulator):
    shard = make_shard(tmp_path, [request("a")])
    op = operator(shard, token_limit_resubmits=2, token_limit_wait=timedelta(0))
    with refused_for_tokens(emulator), pytest.raises(BatchFailedError, match="after 2 resubmission"):
        run_inline(op, stored_context())
    assert [len(batches_with_key(idempotency_key(shard, n))) for n in range(4)] == [1, 1, 1, 0]


def test_a_retry_walks_the_resubmissions_made_and_goes_on_from_the_last(openai_conn, tmp_path, emulator):
    shard = make_shard(tmp_path, [request("a")])
    with refused_for_tokens(emulator), pytest.raises(BatchFailedError, match="after 1 resubmission"):
        run_inline(operator(shard, token_limit_resubmits=1, token_limit_wait=timedelta(0)), stored_context())
    # The retry knows nothing (no task state): it finds both refused batches by metadata, creates
    # neither again, and resubmits once more with a fresh budget.
    result = run_inline(operator(shard, token_limit_resubmits=1, token_limit_wait=timedelta(0)), stored_context())
    assert result["batch"]["status"] == "completed"
    assert [len(batches_with_key(idempotency_key(shard, n))) for n in range(4)] == [1, 1, 1, 0]
    assert result["batch"]["id"] == batches_with_key(idempotency_key(shard, 2))[0].id


# -- timeouts and kills ---------------------------------------------------------------------------


def test_airflows_deferral_timeout_cancels_the_batch_and_says_it_was_a_timeout(openai_conn, tmp_path, slow_batches):
    store = StateStore()
    op = operator(make_shard(tmp_path, [request("a")]))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(stored_context(store))
    assert deferred.value.timeout is not None and deferred.value.timeout >= op.wait_timeout
    resumed = operator(op.shard)  # a fresh instance, as on the worker that resumes
    with pytest.raises(BatchTimeoutError, match="wait timeout, not a batch failure"):
        resumed.resume_execution("__fail__", {"error": "Trigger timeout"}, stored_context(store))
    assert OpenAIBatchHook().get_batch(deferred.value.trigger.batch_id).status in ("cancelling", "cancelled")


def test_on_kill_cancels_the_batch_being_waited_for(openai_conn, tmp_path, slow_batches):
    op = operator(make_shard(tmp_path, [request("a")]))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(stored_context())
    op.on_kill()
    assert OpenAIBatchHook().get_batch(deferred.value.trigger.batch_id).status in ("cancelling", "cancelled")


def test_the_worker_wait_gives_up_after_consecutive_api_errors(openai_conn, tmp_path, emulator, monkeypatch):
    conn = {"conn_type": "openai_batch", "host": emulator.base_url, "password": TEST_API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_NO_RETRY", json.dumps({**conn, "extra": {"max_retries": 0}}))
    hook = OpenAIBatchHook()
    batch = hook.create_batch(
        input_file_id=hook.upload_file(make_shard(tmp_path, [request("a")]).path).id, endpoint="/v1/chat/completions"
    )
    op = operator({}, conn_id="no_retry", deferrable=False, max_consecutive_errors=3)
    with knobs(emulator, http_500_rate=1.0), pytest.raises(BatchLostError, match="3 consecutive API errors"):
        op._wait_here(op.hook, batch.id, None)


def test_the_worker_wait_reads_on_the_schedule_with_poll_interval_as_its_ceiling(
    openai_conn, tmp_path, emulator, monkeypatch
):
    hook = OpenAIBatchHook()
    slept: list[float] = []
    real_sleep = time.sleep
    # The operator's clock, with its sleeps recorded and cut short.
    clock = SimpleNamespace(time=time.time, sleep=lambda seconds: (slept.append(seconds), real_sleep(0.3)))
    monkeypatch.setattr(submit_module, "time", clock)
    with knobs(emulator, in_progress_seconds=0.8):
        batch = hook.create_batch(
            input_file_id=hook.upload_file(make_shard(tmp_path, [request("a")]).path).id,
            endpoint="/v1/chat/completions",
        )
        op = OpenAIBatchSubmitOperator(task_id="submit", shard={}, poll_interval=60, deferrable=False)
        assert op._wait_here(op.hook, batch.id, None).status == "completed"
    # A batch seconds old is read again after the schedule's first step, not after the 60 s ceiling.
    assert slept and all(seconds == FIRST_READ_AFTER for seconds in slept)
