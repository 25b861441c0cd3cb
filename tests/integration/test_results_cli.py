"""``openai-batch reconcile`` on files of a batch run outside Airflow (through the emulator and the openai client)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai import OpenAI

from tests.conftest import TEST_API_KEY

CLI = [sys.executable, "-m", "airflow_provider_openai_batch.cli", "reconcile"]


@pytest.fixture(scope="module")
def batch_files(emulator, tmp_path_factory) -> dict[str, Path]:
    """5 requests run by the emulator, expired after 3: an output file of 3 and an error file of 2."""
    folder = tmp_path_factory.mktemp("cli")
    requests = folder / "requests.jsonl"
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": schema, "strict": True}}
    lines = [
        {
            "custom_id": f"fb-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"text {i}"}],
                "response_format": fmt,
            },
        }
        for i in range(5)
    ]
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    emulator.update_settings(expire_after_requests=3)
    try:
        client = OpenAI(base_url=emulator.base_url, api_key=TEST_API_KEY)
        uploaded = client.files.create(file=requests.open("rb"), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "expired", "cancelled", "failed"):
            time.sleep(0.05)
            batch = client.batches.retrieve(batch.id)
    finally:
        emulator.update_settings(expire_after_requests=None)
    assert batch.status == "expired" and batch.output_file_id and batch.error_file_id
    output, errors = folder / "output.jsonl", folder / "errors.jsonl"
    output.write_bytes(client.files.content(batch.output_file_id).content)
    errors.write_bytes(client.files.content(batch.error_file_id).content)
    return {"requests": requests, "output": output, "errors": errors, "folder": folder}


def reconcile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def test_reconcile_writes_parquet_and_prints_counts_by_status(batch_files):
    dest = batch_files["folder"] / "out" / "rows.parquet"
    done = reconcile(
        "--requests", str(batch_files["requests"]), "--output", str(batch_files["output"]),
        "--errors", str(batch_files["errors"]), "--dest", str(dest), "--batch-status", "expired",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0]
        == "requests=5 succeeded=3 failed=0 invalid_output=0 expired=2 cancelled=0 missing=0"
    )
    assert f"wrote 5 rows to {dest} (parquet)" in done.stdout
    rows = pq.read_table(dest).to_pylist()
    assert sorted(r["custom_id"] for r in rows) == [f"fb-{i}" for i in range(5)]
    answered = [r for r in rows if r["status"] == "succeeded"]
    assert all(json.loads(r["parsed"])["label"] for r in answered)  # JSON asked for: parsed automatically
    assert {r["job_id"] for r in rows} == {"requests"}
    assert [p.name for p in dest.parent.iterdir()] == ["rows.parquet"]


def test_reconcile_writes_jsonl_by_extension_and_marks_requests_without_lines_missing(batch_files):
    dest = batch_files["folder"] / "rows.jsonl"
    done = reconcile(
        "--requests", str(batch_files["requests"]), "--output", str(batch_files["output"]), "--dest", str(dest)
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert sorted(r["status"] for r in rows) == ["missing", "missing", "succeeded", "succeeded", "succeeded"]
    assert "missing=2" in done.stdout


def test_reconcile_needs_no_airflow(batch_files, tmp_path):
    code = (
        "import sys\n"
        "from airflow_provider_openai_batch.cli import main\n"
        f"main(['reconcile', '--requests', {str(batch_files['requests'])!r}, '--output', "
        f"{str(batch_files['output'])!r}, '--dest', {str(tmp_path / 'x.parquet')!r}])\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


def test_reconcile_says_which_file_is_missing(tmp_path):
    done = reconcile(
        "--requests", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl"), "--dest", "x.parquet"
    )
    assert done.returncode == 1 and "nope.jsonl: no such file" in done.stderr


def test_reconcile_refuses_an_output_file_of_another_batch_and_writes_nothing(batch_files, tmp_path):
    others = tmp_path / "other-requests.jsonl"
    others.write_text(batch_files["requests"].read_text().replace('"fb-', '"other-'))
    dest = tmp_path / "rows.parquet"
    args = ["--requests", str(others), "--output", str(batch_files["output"]), "--dest", str(dest)]
    done = reconcile(*args)
    assert done.returncode == 1
    assert (
        "3 answer line(s) of" in done.stderr and "only 0 match" in done.stderr and "nothing was written" in done.stderr
    )
    assert not dest.exists() and list(tmp_path.glob("*.partial")) == []
    forced = reconcile(*args, "--allow-unknown")
    assert forced.returncode == 0 and "missing=5" in forced.stdout


def test_reconcile_an_expired_batch_that_answered_nothing(batch_files, tmp_path):
    dest = tmp_path / "rows.jsonl"
    done = reconcile("--requests", str(batch_files["requests"]), "--dest", str(dest), "--batch-status", "expired")
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["status"] for line in dest.read_text().splitlines()} == {"expired"}
    assert "expired=5" in done.stdout
    assert reconcile("--requests", str(batch_files["requests"]), "--dest", str(dest)).returncode == 2


def test_reconcile_says_where_job_id_comes_from_and_leaves_batch_id_to_the_user(batch_files, tmp_path):
    dest = tmp_path / "rows.jsonl"
    base = ["--requests", str(batch_files["requests"]), "--output", str(batch_files["output"]), "--dest", str(dest)]
    done = reconcile(*base)
    assert "job_id=requests (the requests file's name; --job-id to choose it)" in done.stderr
    assert {json.loads(line)["batch_id"] for line in dest.read_text().splitlines()} == {""}
    assert reconcile(*base, "--job-id", "j1", "--batch-id", "batch_abc").returncode == 0
    rows = [json.loads(line) for line in dest.read_text().splitlines()]
    assert {(r["job_id"], r["batch_id"]) for r in rows} == {("j1", "batch_abc")}


def test_reconcile_splits_a_large_batch_across_processes_into_the_same_rows(emulator, tmp_path):
    """45,000 answers (~20 MB of output): ``--processes 2`` reconciles ranges of it in two workers."""
    requests = tmp_path / "big.jsonl"
    body = {"model": "gpt-4o-mini", "max_tokens": 5}
    with requests.open("w") as handle:
        for i in range(45_000):
            line = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions"}
            handle.write(json.dumps({**line, "body": {**body, "messages": [{"role": "user", "content": f"t {i}"}]}}))
            handle.write("\n")
    client = OpenAI(base_url=emulator.base_url, api_key=TEST_API_KEY)
    batch = client.batches.create(
        input_file_id=client.files.create(file=requests.open("rb"), purpose="batch").id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    while batch.status != "completed":
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    output = tmp_path / "output.jsonl"
    output.write_bytes(client.files.content(batch.output_file_id).content)
    assert output.stat().st_size > 8 << 20  # two ranges of at least 4 MB

    found = {}
    for processes in ("1", "2"):
        dest = tmp_path / f"rows-{processes}.parquet"
        args = ["--requests", str(requests), "--output", str(output), "--dest", str(dest), "--processes", processes]
        done = reconcile(*args, "--job-id", "big", "--batch-id", batch.id)
        assert done.returncode == 0, done.stderr
        assert ("reconciling in 2 worker processes" in done.stderr) == (processes == "2")
        assert "requests=45000 succeeded=45000" in done.stdout
        found[processes] = pq.read_table(dest).drop_columns(["collected_at"]).sort_by("custom_id")
    assert found["2"].equals(found["1"])
    assert reconcile("--requests", str(requests), "--dest", "x.parquet", "--processes", "0").returncode == 2
