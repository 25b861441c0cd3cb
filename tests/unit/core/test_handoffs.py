"""The records tasks hand each other: JSON at the boundary, versioned, refused clearly when unreadable."""

from __future__ import annotations

import json

import pytest

from airflow_provider_openai_batch.core.handoffs import (
    HANDOFF_VERSION,
    BatchRef,
    CollectionState,
    HandoffError,
    ShardRef,
    Submitted,
)

SHARD = ShardRef(
    index=2,
    path="s3://bucket/job/requests/job-shard-00002.jsonl",
    requests=3,
    bytes=456,
    sha256="ab" * 32,
    job_id="job",
    endpoint="/v1/chat/completions",
    model="gpt-4o-mini",
    manifest="s3://bucket/job/manifest.json",
)
BATCH = BatchRef.from_json(
    {
        "id": "batch_1",
        "status": "completed",
        "output_file_id": "file-out",
        "request_counts": {"total": 3, "completed": 3, "failed": 0},
        "errors": [],
        "errors_total": 0,
    }
)


def test_a_record_survives_xcom_as_plain_json():
    state = CollectionState(
        job_id="job", work_dir="s3://bucket/job", requests=3, items=[Submitted(shard=SHARD, batch=BATCH)]
    )
    stored = json.loads(json.dumps(state.to_json()))  # what XCom and the trigger kwargs keep
    assert stored["version"] == HANDOFF_VERSION
    assert CollectionState.from_json(stored) == state


def test_a_record_written_before_versions_existed_is_read_as_version_1():
    old = {k: v for k, v in SHARD.to_json().items() if k != "version"}
    assert ShardRef.from_json(old) == SHARD


def test_keys_a_later_version_added_are_ignored():
    assert ShardRef.from_json({**SHARD.to_json(), "priority": "high"}) == SHARD


def test_a_record_from_a_newer_release_is_refused_saying_so():
    with pytest.raises(
        HandoffError, match=r"a shard has version 2, newer than this provider reads \(1\).*same release"
    ):
        ShardRef.from_json({**SHARD.to_json(), "version": 2})


def test_a_record_missing_a_field_is_refused_naming_it():
    broken = {k: v for k, v in SHARD.to_json().items() if k != "sha256"}
    with pytest.raises(HandoffError, match=r"a shard is not readable \(Object missing required field `sha256`\)"):
        ShardRef.from_json(broken)


def test_something_else_entirely_is_refused():
    with pytest.raises(HandoffError, match="expected a submitted shard"):
        Submitted.from_json(["batch_1"])


def test_a_batch_names_its_files_and_first_error():
    failed = BatchRef.from_json({"id": "b", "status": "failed", "errors": [{"code": "x", "line": 2}]})
    assert BATCH.file_ids == ["file-out"] and failed.file_ids == []
    assert failed.first_error == {"code": "x", "line": 2} and BATCH.first_error == {}


def test_the_submit_operator_refuses_a_shard_from_a_newer_release_before_calling_the_api():
    from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

    op = OpenAIBatchSubmitOperator(task_id="submit", shard={**SHARD.to_json(), "version": 9})
    with pytest.raises(HandoffError, match="newer than this provider reads"):
        op.idempotency_key()
