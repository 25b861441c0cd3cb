"""A deferred wait notices an early end long before ``poll_interval``: ``dag.test()`` against the emulator.

The quickstart DAG with ``poll_interval=60`` and batches that complete 3 s after they are created.
``dag.test()`` runs each submit's trigger inline, through the same read schedule and status board
as a triggerer.
"""

from __future__ import annotations

import json

from tests.integration.dag_loading import load_example_dag
from tests.unit.operators.test_submit import knobs

POLL_INTERVAL = 60


def test_deferred_submits_notice_batches_done_in_three_seconds_well_before_the_poll_interval(
    airflow_db, openai_conn, emulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("OPENAI_BATCH_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_BATCH_POLL_INTERVAL", str(POLL_INTERVAL))
    monkeypatch.setenv("OPENAI_BATCH_RESULTS_CONN_ID", "quickstart_results")
    monkeypatch.setenv("AIRFLOW_CONN_QUICKSTART_RESULTS", json.dumps({"conn_type": "sqlite", "host": ":memory:"}))
    with knobs(emulator, validating_seconds=0, in_progress_seconds=3):
        run = load_example_dag("openai_batch_quickstart").test()
    assert run.state == "success"
    out = capsys.readouterr().out.splitlines()
    for index in (0, 1):  # the two shards' submits, one after the other
        ti = run.get_task_instance("sentiment.submit_batch", map_index=index)
        batch = ti.xcom_pull(task_ids="sentiment.submit_batch", map_indexes=index)["batch"]
        assert batch["status"] == "completed"
        # On a fixed schedule the trigger read at deferral and then not before 60 s.
        assert ti.end_date.timestamp() - batch["created_at"] < POLL_INTERVAL
        # The trigger's reads on the schedule (3 s, 6 s… after creation): a handful, not a storm.
        reads = [line for line in out if f"batch {batch['id']}: " in line]
        assert 1 <= len(reads) <= 3, reads
        assert "completed" in reads[-1]
