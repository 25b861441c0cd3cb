"""
Wait for a batch submitted elsewhere — a notebook, another service — and land its output file.

wait_for_batch -> ``OpenAIBatchSensor`` on the batch id given when triggering; deferrable, so the
                  wait holds no worker slot (``mode="reschedule"`` or ``"poke"`` work too). It only
                  reads: a retry never submits anything, and marking it failed leaves the batch alone
land_output    -> streams the output and error files to ``{WORK_DIR}/landed/<batch_id>/``

Trigger it with the batch id: ``airflow dags trigger openai_batch_sensor -c '{"batch_id": "batch_…"}'``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))

with DAG(
    dag_id="openai_batch_sensor",
    description="Wait for a batch created outside Airflow, then land its files",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    params={"batch_id": Param("", type="string", description="The batch to wait for (batch_…)")},
) as dag:
    # [START howto_sensor_deferrable]
    wait = OpenAIBatchSensor(
        task_id="wait_for_batch",
        batch_id="{{ params.batch_id }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=timedelta(hours=48).total_seconds(),
    )
    # [END howto_sensor_deferrable]

    @task
    def land_output(batch: dict[str, Any]) -> dict[str, Any]:
        """Copy the batch's files next to each other; the XCom says where and how many, never the data."""
        hook = OpenAIBatchHook()
        landed = {}
        for kind in ("output_file_id", "error_file_id"):
            if file_id := batch.get(kind):
                target = f"{WORK_DIR}/landed/{batch['id']}/{kind.removesuffix('_file_id')}.jsonl"
                landed[kind] = str(hook.download_file(file_id, target))
        return {"batch_id": batch["id"], "status": batch["status"], "counts": batch["request_counts"], **landed}

    land_output(wait.output)
