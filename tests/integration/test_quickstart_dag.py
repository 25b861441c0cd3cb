"""The quickstart DAG end to end through ``dag.test()`` against the emulator (deferral runs inline)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_API_KEY
from tests.integration.dag_loading import load_example_dag

FEEDBACK = Path(__file__).resolve().parents[2] / "example_dags" / "data" / "customer_feedback.jsonl"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quickstart")


@pytest.fixture(scope="module")
def dag_run(airflow_db, openai_conn, work_dir):
    """One run of the quickstart, shared by the tests below (each asserts a different property)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_BATCH_WORK_DIR", str(work_dir))
        patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
        patch.setenv("OPENAI_BATCH_RESULTS_CONN_ID", "quickstart_results")
        sqlite_conn = {"conn_type": "sqlite", "host": str(work_dir / "results.db")}
        patch.setenv("AIRFLOW_CONN_QUICKSTART_RESULTS", json.dumps(sqlite_conn))
        return load_example_dag("openai_batch_quickstart").test()


def xcom(dag_run, task_id: str, key: str = "return_value", map_index: int = -1):
    ti = dag_run.get_task_instance(task_id, map_index=map_index)
    return ti.xcom_pull(task_ids=task_id, key=key, map_indexes=map_index)


def test_quickstart_classifies_every_feedback_row_once(dag_run, work_dir):
    assert dag_run.state == "success"

    (results,) = work_dir.glob("results/*/results.parquet")
    rows = pq.read_table(results).to_pylist()
    expected_ids = {json.loads(line)["feedback_id"] for line in FEEDBACK.read_text().splitlines()}
    assert len(rows) == len(expected_ids) == 200
    assert {r["custom_id"] for r in rows} == expected_ids
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["content"] for r in rows)
    assert len({r["batch_id"] for r in rows}) == 2  # 200 rows in shards of 100

    summary = json.loads((results.parent / "summary.json").read_text())
    assert (summary["requests"], summary["succeeded"], summary["failed"]) == (200, 200, 0)
    assert summary["input_tokens"] == sum(r["input_tokens"] for r in rows) > 0
    assert summary["cost_usd"] > 0


def test_quickstart_also_loads_the_rows_into_the_sqlite_table(dag_run, work_dir):
    with sqlite3.connect(work_dir / "results.db") as db:
        statuses = db.execute("SELECT status, count(*) FROM feedback_sentiment GROUP BY status").fetchall()
    assert statuses == [("succeeded", 200)]


def test_quickstart_xcoms_are_small_summaries_and_hold_no_secret(dag_run):
    shards = xcom(dag_run, "sentiment.build_requests")
    assert [s["requests"] for s in shards] == [100, 100]
    assert all(set(s) >= {"path", "sha256", "manifest", "job_id"} for s in shards)
    collected = xcom(dag_run, "sentiment.collect_results")
    assert collected["requests"] == 200
    for value in (shards, collected, xcom(dag_run, "sentiment.submit_batch", map_index=0)):
        encoded = json.dumps(value)
        assert len(encoded) < 4096
        assert TEST_API_KEY not in encoded
        assert "content" not in encoded


def test_quickstart_estimate_equals_the_input_tokens_the_emulator_reports(dag_run, work_dir):
    (manifest,) = work_dir.glob("requests/*/manifest.json")
    (summary,) = work_dir.glob("results/*/summary.json")

    estimate = json.loads(manifest.read_text())["extra"]["estimate"]
    reported = json.loads(summary.read_text())

    assert estimate["input_tokens"] == reported["input_tokens"] > 0
