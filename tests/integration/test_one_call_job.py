"""The one-call forms through ``dag.test()`` against the emulator: ``@task.openai_batch`` and the task-group factory."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.decorators.openai_batch import route_options
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


def test_the_factory_wires_build_submit_and_collect_in_one_group(example_module):
    import importlib

    load_example_dag("openai_batch_taskflow")
    module = importlib.import_module("_example_openai_batch_taskflow")
    dag = module.group_dag
    assert sorted(module.sentiment.children) == [
        "sentiment.build_requests",
        "sentiment.collect_results",
        "sentiment.submit_batch",
    ]
    assert dag.get_task("sentiment.submit_batch").retries == 2
    run = dag.test()
    assert run.state == "success"
    found = rows(example_module / "task-group" / "results")
    assert len(found) == 200 and {r["content"] for r in found} <= LABELS


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
