"""The submit operator against the emulator: deferral, re-attachment, and each way a wait can end."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests.conftest import TEST_API_KEY
from tests.unit.operators.fakes import context


def request(custom_id: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def make_shard(tmp_path, lines: list[str], index: int = 0) -> dict:
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / f"shard-{index}.jsonl"
    path.write_bytes(data)
    return {
        "index": index,
        "path": str(path),
        "requests": len(lines),
        "bytes": len(data),
        "sha256": hashlib.sha256(data + str(time.time_ns()).encode()).hexdigest(),
        "job_id": f"job-{time.time_ns()}",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
    }


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


def operator(shard, **kwargs) -> OpenAIBatchSubmitOperator:
    return OpenAIBatchSubmitOperator(task_id="submit", shard=shard, poll_interval=0.05, **kwargs)


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
    metadata = OpenAIBatchHook().get_batch(trigger.batch_id).metadata
    assert metadata["airflow_map_index"] == "3"
    assert metadata["idempotency_key"] == op.idempotency_key()


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
    assert result["shard"]["path"] == shard["path"]


def test_failed_batch_fails_the_task_with_openais_errors_and_line_numbers(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a"), "{not json", request("c")])
    with pytest.raises(AirflowException) as failure:
        operator(shard, deferrable=False).execute(context())
    message = str(failure.value)
    assert "failed with 1 error(s)" in message
    assert f"{shard['path']}:2: [invalid_json_line]" in message


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
    with pytest.raises(AirflowException, match="wait timeout, not a batch failure"):
        op.execute_complete(context(), event)
    assert OpenAIBatchHook().get_batch(batch_id).status in ("cancelling", "cancelled")


@pytest.mark.parametrize("event", [None, {}, {"status": "weird", "batch_id": "b"}, {"status": "completed"}])
def test_unknown_events_fail_loudly(event):
    with pytest.raises(ValueError, match="unexpected trigger event"):
        operator({"job_id": "j", "sha256": "0" * 64, "index": 0}).execute_complete(context(), event)


def test_too_much_user_metadata_is_refused_before_upload(openai_conn, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    op = operator(shard, metadata={f"k{i}": "v" for i in range(10)})
    with pytest.raises(ValueError, match="at most 9 of your own"):
        op.execute(context())
