"""atomic_open: an object appears whole or not at all, also when its upload was already in parts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import boto3
import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_openai_batch.hooks.storage import atomic_open
from tests.conftest import S3_CONN_ID

MB = 1024 * 1024


def s3_client():
    extra = json.loads(os.environ[f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"])["extra"]
    return boto3.client(
        "s3",
        endpoint_url=extra["endpoint_url"],
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )


def write_then_fail(target: ObjectStoragePath, megabytes: int) -> None:
    with atomic_open(target, block_size=5 * MB) as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(MB))
        raise RuntimeError(f"failed after {megabytes} MB")


def test_a_failed_multipart_upload_is_aborted_not_completed(s3_bucket):
    target = ObjectStoragePath(f"{s3_bucket}/atomic/{uuid.uuid4().hex}/big.bin")
    with pytest.raises(RuntimeError, match="after 12 MB"):
        write_then_fail(target, 12)
    assert not target.exists()
    assert s3_client().list_multipart_uploads(Bucket="results").get("Uploads", []) == []


def test_a_finished_multipart_upload_is_published_whole(s3_bucket):
    target = ObjectStoragePath(f"{s3_bucket}/atomic/{uuid.uuid4().hex}/big.bin")
    data = os.urandom(11 * MB)
    with atomic_open(target, block_size=5 * MB) as handle:
        for start in range(0, len(data), MB):
            handle.write(data[start : start + MB])
    assert target.read_bytes() == data


def test_local_write_goes_through_a_temporary_file_renamed_over_the_target(tmp_path):
    target = ObjectStoragePath(f"file://{tmp_path}/out.bin")
    target.write_bytes(b"old")
    with atomic_open(target) as handle:
        handle.write(b"new")
        assert target.read_bytes() == b"old"
        assert len(list(tmp_path.iterdir())) == 2
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_write_killed_midway_leaves_a_partial_the_next_write_of_that_file_removes(tmp_path):
    job_dir, other_job = tmp_path / "job-a", tmp_path / "job-b"
    other_job.mkdir()
    others = other_job / ".results.parquet.0123456789ab.partial"
    others.write_bytes(b"another job's write in progress")
    killed = (
        "import os, signal\n"
        "from airflow.sdk import ObjectStoragePath\n"
        "from airflow_provider_openai_batch.hooks.storage import atomic_open\n"
        f"with atomic_open(ObjectStoragePath('file://{job_dir}/results.parquet')) as out:\n"
        "    out.write(b'half a file'); out.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", killed], check=False)
    assert done.returncode == -signal.SIGKILL
    (stale,) = job_dir.glob(".results.parquet.*.partial")

    with atomic_open(ObjectStoragePath(f"file://{job_dir}/results.parquet")) as out:
        out.write(b"whole")

    assert not stale.exists()
    assert (job_dir / "results.parquet").read_bytes() == b"whole"
    assert others.exists()
