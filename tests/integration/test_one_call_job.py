"""The one-call forms: ``@task.openai_batch`` through ``dag.test()`` against the emulator; the task-group factory."""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from airflow.sdk import DAG

from airflow_provider_openai_batch.decorators.openai_batch import openai_batch_job, route_options
from tests.integration.dag_loading import load_example_dag

LABELS = {"positive", "negative", "neutral"}


def rows(destination: Path) -> list[dict]:
    (parquet,) = destination.glob("*/results.parquet")
    return pq.read_table(parquet).to_pylist()


@pytest.fixture
def example_module(airflow_db, openai_conn, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BATCH_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
    return tmp_path


def test_the_decorator_runs_the_function_for_the_records_then_the_job(example_module):
    dag = load_example_dag("openai_batch_taskflow")
    assert {t.task_id for t in dag.tasks} == {
        "feedback.records",
        "feedback.build_requests",
        "feedback.submit_batch",
        "feedback.collect_results",
        "report",
    }
    run = dag.test()
    assert run.state == "success"
    found = rows(example_module / "taskflow" / "results")
    assert len(found) == 200 and {r["status"] for r in found} == {"succeeded"}
    assert {r["content"] for r in found} <= LABELS  # the emulator answers with the prompt's labels
    assert len({r["batch_id"] for r in found}) == 2  # shards of 100: a mapped submit
    message = run.get_task_instance("report").xcom_pull(task_ids="report")
    assert message.startswith("200 of 200 classified, $")


def test_the_quickstart_is_the_factory_wiring_build_submit_and_collect_in_one_group(example_module):
    # The quickstart's run through dag.test() is tests/integration/test_quickstart_dag.py.
    load_example_dag("openai_batch_quickstart")
    module = importlib.import_module("_example_openai_batch_quickstart")
    assert sorted(module.sentiment.children) == [
        "sentiment.build_requests",
        "sentiment.collect_results",
        "sentiment.submit_batch",
    ]
    dag = module.dag
    assert dag.get_task("sentiment.build_requests").work_dir == f"{example_module}/requests"
    assert dag.get_task("sentiment.collect_results").table == "feedback_sentiment"
    assert dag.get_task("sentiment.submit_batch").partial_kwargs["poll_interval"] == 0.1


def test_per_task_settings_reach_their_task_only():
    with DAG(dag_id="per_task", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        openai_batch_job(
            "job",
            records=[{"id": 1, "text": "x"}],
            key_field="id",
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "{{ text }}"}],
            work_dir="/tmp/w",
            build={"retries": 1},
            submit={"retries": 5, "pool": "openai_batches"},
            results={"sql_conn_id": "warehouse", "table": "t"},
        )
    build, submit, collect = (
        dag.get_task(f"job.{name}") for name in ("build_requests", "submit_batch", "collect_results")
    )
    assert (build.retries, submit.partial_kwargs["retries"], submit.partial_kwargs["pool"]) == (1, 5, "openai_batches")
    assert (collect.sql_conn_id, collect.table, getattr(build, "sql_conn_id", None)) == ("warehouse", "t", None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sql_conn_id": "x"}, r"sql_conn_id= means something else to each task"),
        ({"colour": "red"}, r"unexpected option colour="),
    ],
)
def test_an_option_no_operator_takes_or_an_ambiguous_one_is_refused(options, message):
    with pytest.raises(TypeError, match=message):
        route_options(options)


def test_shared_options_go_to_every_operator_that_takes_them():
    routed = route_options({"conn_id": "acct2", "key_field": "id", "reattach": False, "max_attempts": 2})
    assert routed["build"] == {"key_field": "id"}
    assert routed["submit"] == {"conn_id": "acct2", "reattach": False}
    assert routed["results"] == {"conn_id": "acct2", "max_attempts": 2}


def test_cache_options_go_to_the_build_and_the_collect():
    routed = route_options({"cache": "s3://c@b/cache", "cache_mode": "read-only", "cache_max_age": 3600})
    assert routed["build"] == {"cache": "s3://c@b/cache", "cache_mode": "read-only", "cache_max_age": 3600}
    assert routed["results"] == {"cache": "s3://c@b/cache", "cache_mode": "read-only"}
    assert routed["submit"] == {}
