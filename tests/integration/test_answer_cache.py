"""The answer cache end to end: example DAGs through ``dag.test()`` twice against the emulator.

Requests sent are counted from the emulator's batches (``request_counts.total``), so "sends 0"
means no batch was made at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.core.collect.retries import RetryPolicy
from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings
from tests.conftest import TEST_API_KEY
from tests.integration.dag_loading import load_example_dag

FEEDBACK = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "customer_feedback.jsonl"
ARTICLES = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "help_articles.jsonl"
# What may differ between a row bought and the same row from the cache.
PER_RUN = {"job_id", "collected_at", "cached", "cost_usd"}


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    settings = EmulatorSettings(validating_seconds=0.0, in_progress_seconds=0.05, finalizing_seconds=0.0)
    with EmulatorServer(settings=settings) as server:
        yield server


@pytest.fixture
def job(airflow_db, emulator, tmp_path, monkeypatch):
    conn = {"conn_type": "openai_batch", "host": emulator.base_url, "password": TEST_API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("OPENAI_BATCH_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
    monkeypatch.setenv("OPENAI_BATCH_CACHE", str(tmp_path / "cache"))
    client = OpenAI(base_url=emulator.base_url, api_key=TEST_API_KEY)
    seen: set[str] = set()

    def run(
        dag_id: str = "openai_batch_quickstart", max_attempts: int | None = None, cache_mode: str | None = None
    ) -> tuple[int, list[dict]]:
        """One run: (requests sent in new batches, the delivered rows by custom_id)."""
        dag = load_example_dag(dag_id)
        (collect,) = [task_id for task_id in dag.task_ids if task_id.endswith("collect_results")]
        if max_attempts is not None:
            dag.get_task(collect).policy = RetryPolicy(max_attempts)
        if cache_mode is not None:
            (build,) = [task_id for task_id in dag.task_ids if task_id.endswith("build_requests")]
            dag.get_task(build).cache_mode = cache_mode
            dag.get_task(collect).cache_mode = cache_mode
        dag_run = dag.test()
        assert dag_run.state == "success"
        batches = [b for b in client.batches.list(limit=100) if b.id not in seen]
        seen.update(b.id for b in batches)
        summary = dag_run.get_task_instance(collect).xcom_pull(task_ids=collect)
        rows = pq.read_table(summary["destination"]).to_pylist()
        return sum(b.request_counts.total for b in batches), sorted(rows, key=lambda r: r["custom_id"])

    return run


def same_bar_run(first: list[dict], second: list[dict]) -> bool:
    return [{k: v for k, v in r.items() if k not in PER_RUN} for r in first] == [
        {k: v for k, v in r.items() if k not in PER_RUN} for r in second
    ]


def test_a_rerun_sends_nothing_and_delivers_the_same_rows(job):
    sent, first = job()
    assert sent == 200 and len(first) == 200 and not any(r["cached"] for r in first)
    sent, second = job()
    assert sent == 0
    assert len(second) == 200 and all(r["cached"] and r["cost_usd"] == 0 for r in second)
    assert same_bar_run(first, second)


def test_changing_ten_records_sends_those_ten(job, tmp_path, monkeypatch):
    job()
    lines = FEEDBACK.read_text().splitlines()
    changed = tmp_path / "feedback.jsonl"
    records = [json.loads(line) for line in lines]
    for record in records[:10]:
        record["text"] += " (edited)"
    changed.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setenv("OPENAI_BATCH_QUICKSTART_INPUT", str(changed))
    sent, rows = job()
    assert sent == 10
    fresh = {r["custom_id"] for r in rows if not r["cached"]}
    assert fresh == {r["feedback_id"] for r in records[:10]}
    assert len(rows) == 200 and {r["status"] for r in rows} == {"succeeded"}


def test_the_embeddings_example_caches_its_vectors(job, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BATCH_EMBEDDINGS_DESTINATION", str(tmp_path / "vectors"))
    articles = len(ARTICLES.read_text().splitlines())
    sent, first = job("openai_batch_embeddings")
    assert sent == articles
    sent, second = job("openai_batch_embeddings")
    assert sent == 0 and all(r["cached"] for r in second)
    assert [r["embedding"] for r in first] == [r["embedding"] for r in second]


def test_failed_and_expired_requests_are_sent_again_next_run(job, emulator):
    # Each batch of 100 expires after 90 requests, and some of those fail: with one attempt, the
    # first run ends with failed and expired rows, which must not be cached.
    emulator.update_settings(expire_after_requests=90, request_failure_rate=0.05)
    _, first = job(max_attempts=1)
    statuses = {r["status"] for r in first}
    assert {"failed", "expired"} <= statuses
    answered = [r for r in first if r["status"] == "succeeded"]
    emulator.update_settings(expire_after_requests=None, request_failure_rate=0.0)
    sent, second = job()
    assert sent == 200 - len(answered)
    assert {r["custom_id"] for r in second if r["cached"]} == {r["custom_id"] for r in answered}
    assert {r["status"] for r in second} == {"succeeded"}


def test_read_only_uses_the_cache_but_adds_nothing(job, tmp_path):
    sent, _ = job(cache_mode="read-only")
    assert sent == 200 and not list((tmp_path / "cache").glob("*.parquet"))
    job()  # read-write fills it
    parts = sorted((tmp_path / "cache").glob("*.parquet"))
    sent, rows = job(cache_mode="read-only")
    assert sent == 0 and all(r["cached"] for r in rows)
    assert sorted((tmp_path / "cache").glob("*.parquet")) == parts


def test_a_sql_table_serves_as_the_cache_too(job, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CACHE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "c.db")}))
    monkeypatch.setenv("OPENAI_BATCH_CACHE", "cache_db:answer_cache")
    sent, first = job()
    assert sent == 200
    sent, second = job()
    assert sent == 0 and all(r["cached"] for r in second)
    assert same_bar_run(first, second)


def test_a_cache_on_s3_serves_the_rerun(job, s3_bucket, monkeypatch):
    prefix = f"{s3_bucket}/answer-cache-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OPENAI_BATCH_CACHE", prefix)
    sent, first = job()
    assert sent == 200
    sent, second = job()
    assert sent == 0 and all(r["cached"] for r in second)
    assert same_bar_run(first, second)
