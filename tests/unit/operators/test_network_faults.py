"""One billed batch per shard and every byte once, through faults after the server committed.

The emulator's connection-fault knobs drop replies the real ``openai`` client is waiting for,
over real HTTP: a create whose batch exists but whose answer never came, a 500 after the commit,
uploads and status reads reset more often than the client's own two retries ride out, and a
results download cut off halfway.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import msgspec
import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

from airflow_provider_openai_batch.exceptions import BatchTimeoutError
from airflow_provider_openai_batch.hooks.call_retries import CallRetries
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch_lifecycle import (
    IDEMPOTENCY_KEY,
    idempotency_key,
    submit_shard,
)
from airflow_provider_openai_batch.triggers.events import batch_summary
from tests.conftest import TEST_API_KEY
from tests.unit.operators.test_results import collect, shard_refs, submitted_job
from tests.unit.operators.test_submit import (
    PullingTI,
    batches_with_key,
    knobs,
    make_shard,
    operator,
    request,
    stored_context,
)

FAST = CallRetries(attempts=8, base_delay=0.01, max_delay=0.05)


@pytest.fixture(autouse=True)
def fast_retries(openai_conn, emulator, monkeypatch):
    """The default policy's attempts with waits short enough for a test, set on the connection."""
    conn = {
        "conn_type": "openai_batch",
        "host": emulator.base_url,
        "password": TEST_API_KEY,
        "extra": {"call_retries": {"base_delay": FAST.base_delay, "max_delay": FAST.max_delay}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))


def test_the_connection_sets_the_retry_policy():
    assert OpenAIBatchHook().call_retries == FAST


@pytest.fixture
def hook(openai_conn) -> OpenAIBatchHook:
    return OpenAIBatchHook()


@pytest.mark.parametrize("fault", ["reset_after_create", "error_after_create"])
def test_a_create_whose_reply_is_lost_after_the_commit_makes_one_batch(openai_conn, emulator, tmp_path, fault, capsys):
    shard = make_shard(tmp_path, [request("a"), request("b")])
    op = operator(shard)
    with knobs(emulator, **{fault: 1}), pytest.raises(TaskDeferred) as deferred:
        op.execute(stored_context())

    (only,) = batches_with_key(op.idempotency_key())
    assert deferred.value.trigger.batch_id == only.id
    assert f"The failed create had made batch {only.id}" in capsys.readouterr().out


def test_two_creates_lost_in_a_row_still_make_one_batch(hook, emulator, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    with knobs(emulator, reset_after_create=1, error_after_create=1):
        batch = submit_shard(hook, shard, {})
    assert [b.id for b in batches_with_key(idempotency_key(shard))] == [batch.id]


def test_two_batches_under_one_key_keep_the_oldest_and_cancel_the_other(hook, emulator, tmp_path, caplog):
    shard = make_shard(tmp_path, [request("a")])
    key = idempotency_key(shard)
    with knobs(emulator, in_progress_seconds=30):
        older = submit_shard(hook, shard, {}, reattach=False)
        newer = submit_shard(hook, shard, {}, reattach=False)
        with caplog.at_level(logging.WARNING):
            kept = submit_shard(hook, shard, {})

        assert kept.id == older.id
        assert hook.get_batch(newer.id).status in ("cancelling", "cancelled")
        assert hook.get_batch(older.id).status == "in_progress"
    assert f"Batch {newer.id} duplicates batch {older.id} (key {key})" in caplog.text


def test_uploads_and_status_reads_ride_out_more_resets_than_the_client_retries(openai_conn, emulator, tmp_path):
    shard = make_shard(tmp_path, [request("a"), request("b")])
    op = operator(shard, deferrable=False)
    with knobs(emulator, reset_before_upload=3, reset_after_upload=1, reset_status_reads=4):
        result = op.execute(stored_context())
    assert result["batch"]["status"] == "completed"
    assert len(batches_with_key(op.idempotency_key())) == 1


def test_a_high_rate_of_429_and_500_does_not_fail_the_submit(openai_conn, emulator, tmp_path, capsys, caplog):
    shard = make_shard(tmp_path, [request(f"r{i}") for i in range(5)])
    op = operator(shard, deferrable=False)
    with knobs(emulator, http_429_rate=0.3, http_500_rate=0.2, seed=4):
        result = op.execute(stored_context())
    logged = capsys.readouterr().out + caplog.text
    assert result["batch"]["status"] == "completed"
    assert len(batches_with_key(op.idempotency_key())) == 1
    assert "retry 1 of 7" in logged  # the provider says what it is doing
    assert TEST_API_KEY not in logged


def test_a_download_cut_off_resumes_where_it_stopped(hook, emulator, tmp_path):
    shard = make_shard(tmp_path, [request(f"r{i}") for i in range(40)])
    batch = submit_shard(hook, shard, {})
    while batch.status != "completed":
        time.sleep(0.05)
        batch = hook.get_batch(batch.id)
    assert batch.output_file_id is not None
    whole = b"".join(hook.iter_file_chunks(batch.output_file_id))

    with knobs(emulator, cut_downloads=5, cut_download_after_bytes=700):
        lines = list(hook.iter_file_lines(batch.output_file_id))

    assert lines == whole.splitlines()
    assert len(whole) > 5 * 700  # every cut fell inside the file


def test_retry_batches_of_the_results_task_are_created_once_through_a_lost_reply(openai_conn, emulator, tmp_path):
    with knobs(emulator, expire_after_requests=4):
        items = submitted_job(tmp_path, [6])
    op = collect(items, tmp_path / "results", max_attempts=2)
    with knobs(emulator, reset_after_create=1, in_progress_seconds=30), pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": PullingTI(task_id="collect")})
    retry_batch = OpenAIBatchHook().get_batch(deferred.value.trigger.batch_id)
    key = retry_batch.metadata[IDEMPOTENCY_KEY]
    assert key.endswith(":attempt2")
    assert [b.id for b in batches_with_key(key)] == [retry_batch.id]


def test_retry_batches_wait_with_a_deadline_and_are_cancelled_at_the_deferral_timeout(openai_conn, emulator, tmp_path):
    with knobs(emulator, expire_after_requests=4):
        items = submitted_job(tmp_path, [6])
    op = collect(items, tmp_path / "results", max_attempts=2, max_consecutive_errors=7)
    context: dict[str, Any] = {"ti": PullingTI(task_id="collect")}
    with knobs(emulator, in_progress_seconds=30):
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        trigger = deferred.value.trigger
        assert trigger.deadline is not None and trigger.deadline > time.time()
        assert trigger.max_consecutive_errors == 7
        assert deferred.value.timeout is not None  # Airflow's backstop of wait_timeout

        with pytest.raises(BatchTimeoutError, match="Timed out waiting for retry batch"):
            op.resume_execution(TRIGGER_FAIL_REPR, {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, context)
        assert OpenAIBatchHook().get_batch(trigger.batch_id).status in ("cancelling", "cancelled")


def test_the_submit_and_results_paths_key_and_tag_batches_the_same_way(openai_conn, tmp_path):
    (shard,) = shard_refs(tmp_path, [3])
    retry = msgspec.structs.replace(shard, attempt=2)
    assert idempotency_key(retry) == f"{idempotency_key(shard)}:attempt2"
    assert idempotency_key(retry, 1) == f"{idempotency_key(shard)}:attempt2:resubmit1"


def test_a_resume_without_its_kwargs_takes_the_collection_state_from_xcom(openai_conn, emulator, tmp_path):
    """Airflow 3.0's dag.test() resumes a deferred task without the kwargs it deferred with."""
    with knobs(emulator, expire_after_requests=4):
        items = submitted_job(tmp_path, [6])
    op = collect(items, tmp_path / "results", max_attempts=2)
    context: dict[str, Any] = {"ti": PullingTI(task_id="collect")}
    with knobs(emulator, in_progress_seconds=30), pytest.raises(TaskDeferred) as deferred:
        op.execute(context)  # the retry batch is still running when the task reads it
    trigger = deferred.value.trigger
    batch = OpenAIBatchHook().get_batch(trigger.batch_id)
    while batch.status not in ("completed", "expired", "failed", "cancelled"):
        time.sleep(0.05)
        batch = OpenAIBatchHook().get_batch(trigger.batch_id)
    event = {"status": "completed", "batch_id": batch.id, "batch": batch_summary(batch)}

    summary = op.resume(context, event=event)  # no state=

    assert summary["requests"] == 6 and summary["attempts"] == 2
