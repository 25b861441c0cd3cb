"""The pools and sensor example DAGs through ``dag.test()`` against the emulator.

``dag.test()`` runs the deferrals inline and ignores pools; the pool's cap on real components is
shown by tests/integration/test_real_airflow.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests.integration.dag_loading import load_example_dag


@pytest.fixture
def example_env(airflow_db, openai_conn, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("OPENAI_BATCH_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("OPENAI_BATCH_POLL_INTERVAL", "0.1")
    return tmp_path


def xcom(dag_run, task_id: str, map_index: int = -1):
    ti = dag_run.get_task_instance(task_id, map_index=map_index)
    return ti.xcom_pull(task_ids=task_id, map_indexes=map_index)


def test_the_pools_example_submits_every_shard_in_the_pool(example_env):
    dag = load_example_dag("openai_batch_pools")
    assert {t.pool for t in dag.task_dict.values() if t.task_id == "submit_batch"} == {"openai_batches"}
    dag_run = dag.test()
    assert dag_run.state == "success"
    submits = [ti for ti in dag_run.get_task_instances() if ti.task_id == "submit_batch"]
    assert len(submits) == 8 and {ti.state for ti in submits} == {"success"}


def test_the_sensor_example_waits_for_a_batch_made_elsewhere_and_lands_its_files(example_env):
    hook = OpenAIBatchHook()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    source = example_env / "made-elsewhere.jsonl"
    source.write_text(
        "".join(
            json.dumps({"custom_id": f"n{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}) + "\n"
            for i in range(3)
        )
    )
    batch = hook.create_batch(input_file_id=hook.upload_file(source).id, endpoint="/v1/chat/completions")

    dag_run = load_example_dag("openai_batch_sensor").test(run_conf={"batch_id": batch.id})

    assert dag_run.state == "success"
    landed = xcom(dag_run, "land_output")
    assert landed["batch_id"] == batch.id and landed["counts"]["completed"] == 3
    lines = Path(landed["output_file_id"].removeprefix("file://")).read_text().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["n0", "n1", "n2"]
