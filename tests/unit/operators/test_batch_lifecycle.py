"""submit_shard against the emulator: find-or-create by idempotency key, the step retries reuse."""

from __future__ import annotations

import msgspec
import pytest

from airflow_provider_openai_batch.core.handoffs import ShardRef
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch_lifecycle import IDEMPOTENCY_KEY, idempotency_key, submit_shard
from tests.unit.operators.test_submit import batches_with_key, make_shard, request


@pytest.fixture
def hook(openai_conn) -> OpenAIBatchHook:
    return OpenAIBatchHook()


def test_idempotency_key_depends_on_job_and_file_hash_only():
    shard = ShardRef(job_id="job", sha256="ab" * 32, index=4, path="/x", requests=1, bytes=1, endpoint="/v1/x")
    assert idempotency_key(shard) == "job:" + "ab" * 16
    assert idempotency_key(msgspec.structs.replace(shard, index=5, path="/y")) == idempotency_key(shard)
    assert idempotency_key(msgspec.structs.replace(shard, job_id="other")) != idempotency_key(shard)


def test_second_call_reattaches_instead_of_creating(hook, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    first = submit_shard(hook, shard, {"custom": "1"})
    again = submit_shard(hook, shard, {"custom": "1"})
    assert again.id == first.id
    tags = first.metadata or {}
    assert (tags[IDEMPOTENCY_KEY], tags["custom"]) == (idempotency_key(shard), "1")
    assert len(batches_with_key(idempotency_key(shard))) == 1


def test_reattach_false_creates_another_batch(hook, tmp_path):
    shard = make_shard(tmp_path, [request("a")])
    first = submit_shard(hook, shard, {})
    second = submit_shard(hook, shard, {}, reattach=False)
    assert second.id != first.id
    assert len(batches_with_key(idempotency_key(shard))) == 2


def test_an_explicit_key_in_metadata_is_the_one_looked_up(hook, tmp_path):
    """A retry shard (issue 5) brings its own key so it does not re-attach to the original batch."""
    shard = make_shard(tmp_path, [request("a")])
    original = submit_shard(hook, shard, {})
    retry = submit_shard(hook, shard, {IDEMPOTENCY_KEY: idempotency_key(shard) + ":retry1"})
    assert retry.id != original.id
    assert submit_shard(hook, shard, {IDEMPOTENCY_KEY: idempotency_key(shard) + ":retry1"}).id == retry.id
