"""The build operator on object storage: records read from and shards written to S3 (moto's server on loopback)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.validate.validation import BatchInputError
from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from tests.unit.core.shard_files import read_manifest
from tests.unit.operators.fakes import context

BUCKET = "openai-batch-build"
CONN_ID = "build_s3"  # its own connection: ObjectStoragePath caches a filesystem per connection
RECORDS = [{"id": f"r{i}", "text": f"review {i}", "stars": i % 5} for i in range(120)]


@pytest.fixture(scope="module")
def s3(moto_s3) -> Iterator[object]:
    """A bucket of this module's own on moto's S3 server, through its own Airflow connection; a client to it."""
    moto_s3.bucket(BUCKET)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(moto_s3.connection))
        yield moto_s3.client


def uri(key: str) -> str:
    return f"s3://{CONN_ID}@{BUCKET}/{key}"


def put(s3, key: str, data: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return uri(key)


def get(s3, location: str) -> bytes:
    key = location.split(f"{BUCKET}/", 1)[1]
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def jsonl() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


def csv() -> bytes:
    return ("id,text,stars\n" + "".join(f"{r['id']},{r['text']},{r['stars']}\n" for r in RECORDS)).encode()


def parquet() -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(RECORDS), buffer, row_group_size=50)
    return buffer.getvalue()


def build(records: str, job_id: str, **kwargs):
    kwargs.setdefault("body", {"max_output_tokens": 16})
    op = OpenAIBatchBuildOperator(
        task_id="build",
        records=records,
        key_field="id",
        endpoint="/v1/responses",
        model="gpt-4.1-mini",
        prompt="Rate {{ stars }}/5: {{ text }}",
        work_dir=uri("work"),
        job_id=job_id,
        max_requests_per_shard=50,
        **kwargs,
    )
    ctx = context()
    return op.execute(ctx), ctx["ti"].pushed


@pytest.mark.parametrize(("name", "payload"), [("in.jsonl", jsonl), ("in.csv", csv), ("in.parquet", parquet)])
def test_records_on_s3_become_shards_and_a_manifest_on_s3(s3, name, payload):
    job_id = name.replace(".", "-")
    source = put(s3, f"inputs/{name}", payload())
    shards, pushed = build(source, job_id)
    assert [s["requests"] for s in shards] == [50, 50, 20]
    lines = []
    for shard in shards:
        data = get(s3, shard["path"])
        assert shard["path"].startswith(uri(f"work/{job_id}/requests/"))
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        lines += [json.loads(line) for line in data.splitlines()]
    assert [line["custom_id"] for line in lines] == [r["id"] for r in RECORDS]
    assert lines[7]["body"] == {"model": "gpt-4.1-mini", "input": "Rate 2/5: review 7", "max_output_tokens": 16}
    manifest = read_manifest(get(s3, pushed["summary"]["manifest"]))
    assert [s.sha256 for s in manifest.shards] == [s["sha256"] for s in shards]
    assert manifest.extra["estimate"]["requests"] == 120


def test_a_failed_validation_on_s3_leaves_no_manifest(s3):
    source = put(s3, "inputs/bad.jsonl", jsonl())
    with pytest.raises(BatchInputError, match=r"requests/bad-shard-00000\.jsonl:1: body\.stream is true"):
        build(source, "bad", body={"max_output_tokens": 16, "stream": True})
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="work/bad/")
    assert "work/bad/manifest.json" not in [item["Key"] for item in listed.get("Contents", [])]


def test_a_prefix_of_parquet_parts_on_s3_is_read_part_by_part(s3):
    for part, rows in enumerate((RECORDS[:70], RECORDS[70:])):
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        put(s3, f"inputs/export/part-{part:05d}.snappy.parquet", buffer.getvalue())
    put(s3, "inputs/export/_SUCCESS", b"")
    shards, pushed = build(uri("inputs/export/"), "export")
    assert pushed["summary"]["requests"] == 120
    first = json.loads(get(s3, shards[0]["path"]).splitlines()[0])
    assert first["custom_id"] == "r0"
