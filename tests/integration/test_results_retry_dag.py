"""Retries through Airflow: the quickstart DAG with batches that expire part-way, via dag.test().

The collect task defers to the trigger for each retry batch and resumes with its state carried in
Airflow's own next_kwargs, so this checks the state survives Airflow's serialization.
"""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from tests.integration.dag_loading import load_example_dag


@pytest.fixture(scope="module")
def dag_run(airflow_db, openai_conn, emulator, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("retry-dag")
    emulator.update_settings(expire_after_requests=60)  # each batch answers 60 requests, then expires
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("OPENAI_BATCH_WORK_DIR", str(work_dir))
            patch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
            patch.delenv("OPENAI_BATCH_RESULTS_CONN_ID", raising=False)
            run = load_example_dag("openai_batch_quickstart").test()
    finally:
        emulator.update_settings(expire_after_requests=None)
    return run, work_dir


def test_expired_requests_are_answered_by_retry_batches_across_deferrals(dag_run):
    run, work_dir = dag_run
    assert run.state == "success"
    (results,) = work_dir.glob("results/*/results.parquet")
    rows = pq.read_table(results, columns=["custom_id", "status", "attempt"]).to_pylist()
    assert len(rows) == len({r["custom_id"] for r in rows}) == 200
    assert {r["status"] for r in rows} == {"succeeded"}
    # two shards of 100: 60 + 60 answered, 80 retried; 60 of them answered, 20 retried again
    assert Counter(r["attempt"] for r in rows) == {1: 120, 2: 60, 3: 20}
    ti = run.get_task_instance("sentiment.collect_results")
    summary = ti.xcom_pull(task_ids="sentiment.collect_results")
    assert (summary["attempts"], summary["retried"], len(summary["batches"])) == (3, {"2": 80, "3": 20}, 4)
