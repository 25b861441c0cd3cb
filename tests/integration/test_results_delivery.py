"""Delivery end to end: emulator batches -> results operator -> S3 (moto's server) and PostgreSQL, run twice."""

from __future__ import annotations

import uuid

import psycopg
import pyarrow.parquet as pq
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from tests.conftest import POSTGRES_URL
from tests.unit.operators.fakes import RecordingTI
from tests.unit.operators.test_results import collect, run_to_completion, submitted_job


@pytest.fixture
def pg_table(postgres_conn):
    name = f"feedback_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        db.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_a_rerun_leaves_one_row_per_request_in_s3_and_in_postgres(
    openai_conn, s3_bucket, postgres_conn, pg_table, tmp_path
):
    items = submitted_job(tmp_path, [7, 5])
    destination = f"{s3_bucket}/delivery/{uuid.uuid4().hex}"
    summaries = []
    for _ in range(2):  # a retried or cleared task runs the whole collection again
        op = collect(items, destination, sql_conn_id=postgres_conn, table=pg_table)
        summary, _ = run_to_completion(op, {"ti": RecordingTI()})
        summaries.append(summary)

    job_id = summaries[0]["job_id"]
    target = ObjectStoragePath(f"{destination}/{job_id}/results.parquet")
    with target.open("rb") as handle:
        s3_ids = pq.read_table(handle, columns=["custom_id"]).column("custom_id").to_pylist()
    assert sorted(s3_ids) == [f"r{i:03d}" for i in range(12)]
    assert sorted(p.name for p in ObjectStoragePath(f"{destination}/{job_id}").iterdir()) == [
        "results.parquet",
        "summary.json",
    ]
    with psycopg.connect(POSTGRES_URL) as db:
        rows = db.execute(f'SELECT job_id, count(*), count(DISTINCT custom_id) FROM "{pg_table}" GROUP BY 1').fetchall()
    assert rows == [(job_id, 12, 12)]
    assert summaries[0]["destinations"] == summaries[1]["destinations"]
    assert summaries[1]["destination"] == str(target)
