"""ObjectStorageSink on the local filesystem and on S3 (moto's server on loopback): typed, atomic, idempotent."""

from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_openai_batch.core.collect.result_table import RESULT_SCHEMA
from airflow_provider_openai_batch.sinks.object_storage import ObjectStorageSink
from tests.unit.sinks.helpers import batches


def failing(good):
    yield from good
    raise RuntimeError("the source broke halfway")


def read_rows(path: ObjectStoragePath) -> list[dict]:
    with path.open("rb") as handle:
        return pq.read_table(handle).to_pylist()


def test_parquet_has_the_typed_schema_and_a_deterministic_key(tmp_path):
    sink = ObjectStorageSink(str(tmp_path))
    report = sink.write("job-1", batches("job-1", ["a", "b", "c"]))
    target = tmp_path / "job-1" / "results.parquet"
    assert report == {"kind": "object_storage", "format": "parquet", "uri": f"file://{target}", "rows": 3}
    assert pq.read_schema(target).equals(RESULT_SCHEMA, check_metadata=False)
    assert pq.read_schema(target).metadata[b"openai_batch.schema_version"] == b"1"
    assert sink.lineage("job-1") == ("file", str(target))


def test_rerunning_a_job_replaces_its_object(tmp_path):
    sink = ObjectStorageSink(str(tmp_path))
    sink.write("job", batches("job", ["a", "b", "c"], "first"))
    sink.write("job", batches("job", ["a", "b", "c"], "second"))
    rows = read_rows(sink.location("job"))
    assert sorted(r["custom_id"] for r in rows) == ["a", "b", "c"]
    assert {r["content"] for r in rows} == {"second"}
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["results.parquet"]


def test_a_failed_write_leaves_the_previous_object_and_no_partial_file(tmp_path):
    sink = ObjectStorageSink(str(tmp_path), format="jsonl")
    sink.write("job", batches("job", ["a", "b"], "kept"))
    with pytest.raises(RuntimeError, match="halfway"):
        sink.write("job", failing(batches("job", ["a", "b", "c"], "lost", size=1)))
    assert [json.loads(line)["content"] for line in (tmp_path / "job" / "results.jsonl").read_text().splitlines()] == [
        "kept",
        "kept",
    ]
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["results.jsonl"]


def test_a_job_id_cannot_place_the_object_outside_the_base(tmp_path):
    base = tmp_path / "results"
    sink = ObjectStorageSink(str(base))
    sink.write("../../escape", batches("../../escape", ["a"]))
    (written,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written.is_relative_to(base)


def test_jsonl_rows_carry_nested_parsed_json_and_iso_timestamps(tmp_path):
    sink = ObjectStorageSink(str(tmp_path), format="jsonl")
    sink.write("job", batches("job", ["a"], '{"label": "positive"}', expect_json=True))
    (row,) = [json.loads(line) for line in (tmp_path / "job" / "results.jsonl").read_text().splitlines()]
    assert row["parsed"] == {"label": "positive"}
    assert row["responded_at"] == "2026-01-01T00:00:00Z"
    assert row["batch_created_at"] == "1970-01-01T00:00:01Z"


def test_s3_rerun_replaces_the_object_and_a_failed_rerun_keeps_it(s3_bucket):
    prefix = f"{s3_bucket}/runs/{uuid.uuid4().hex}"
    sink = ObjectStorageSink(prefix)
    sink.write("job", batches("job", ["a", "b", "c"], "first"))
    sink.write("job", batches("job", ["a", "b", "c"], "second"))
    with pytest.raises(RuntimeError, match="halfway"):
        sink.write("job", failing(batches("job", ["a", "b", "c"], "third", size=1)))
    rows = read_rows(sink.location("job"))
    assert sorted((r["custom_id"], r["content"]) for r in rows) == [("a", "second"), ("b", "second"), ("c", "second")]
    listed = sorted(p.name for p in ObjectStoragePath(prefix).joinpath("job").iterdir())
    assert listed == ["results.parquet"]
    namespace, key = sink.lineage("job")
    assert (namespace, key) == ("s3://results", f"{prefix.split('results/', 1)[1]}/job/results.parquet")


def test_s3_failed_first_write_publishes_nothing(s3_bucket):
    prefix = f"{s3_bucket}/runs/{uuid.uuid4().hex}"
    sink = ObjectStorageSink(prefix)
    with pytest.raises(RuntimeError):
        sink.write("job", failing(batches("job", ["a", "b"], size=1)))
    assert not sink.location("job").exists()
