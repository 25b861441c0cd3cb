from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.shards import Manifest
from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from tests.unit.operators.fakes import context

MESSAGES = [{"role": "user", "content": "Sentiment of: {{ text }}"}]


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def build(tmp_path, records, **kwargs):
    op = OpenAIBatchBuildOperator(
        task_id="build",
        records=records,
        key_field="id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=MESSAGES,
        work_dir=str(tmp_path),
        job_id="job/../1",
        **kwargs,
    )
    ctx = context()
    return op.execute(ctx), ctx["ti"].pushed


def test_build_writes_shards_and_manifest_and_returns_mappable_shard_list(tmp_path):
    records = [{"id": f"r{i}", "text": f"text {i}"} for i in range(5)]
    shards, pushed = build(tmp_path, records, max_requests_per_shard=2)
    assert [s["requests"] for s in shards] == [2, 2, 1]
    assert pushed["summary"]["requests"] == 5
    assert pushed["summary"]["job_id"] == "job_.._1"  # a job id can never climb out of work_dir
    for shard in shards:
        data = local(shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert shard["path"].startswith(f"file://{tmp_path}/job_.._1/requests/")
    manifest = Manifest.from_json(local(shards[0]["manifest"]).read_bytes())
    assert manifest.requests == 5
    assert [s.sha256 for s in manifest.shards] == [s["sha256"] for s in shards]


def test_build_reads_a_jsonl_file_of_records(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps({"id": i, "text": "t"}) for i in range(3)) + "\n")
    shards, _ = build(tmp_path, str(source))
    assert shards[0]["requests"] == 3


def test_build_reads_a_csv_file_of_records(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,text\na,hello\nb,world\n")
    shards, _ = build(tmp_path, str(source))
    first = json.loads(local(shards[0]["path"]).read_text().splitlines()[0])
    assert first["custom_id"] == "a"
    assert first["body"]["messages"][0]["content"] == "Sentiment of: hello"


def test_bad_record_fails_before_anything_is_written_to_the_api(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="record #2 has no key field 'id'"):
        build(tmp_path, [{"id": 1, "text": "a"}, {"text": "b"}])


def test_no_records_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        build(tmp_path, [])
