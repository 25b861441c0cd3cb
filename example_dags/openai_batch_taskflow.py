"""
The quickstart's job in one call: a TaskFlow function returns where the records are, and
``@task.openai_batch`` adds the build, the mapped submit and the collect after it. The second DAG
does the same with the task-group factory, ``openai_batch_job``, for code without TaskFlow.

Both read the sample feedback file; ``make demo DAG=openai_batch_taskflow`` runs the first
against the emulator. ``openai_batch_quickstart`` shows the three operators written out.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_openai_batch.decorators.openai_batch import openai_batch_job

FEEDBACK = str(Path(__file__).parent / "data" / "customer_feedback.jsonl")
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
PROMPT = [
    {"role": "system", "content": "Answer positive, negative or neutral."},
    {"role": "user", "content": "{{ text }}"},
]

with DAG(dag_id="openai_batch_taskflow", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    # [START howto_decorator_openai_batch]
    @task.openai_batch(
        key_field="feedback_id",
        model="gpt-4o-mini",
        messages=PROMPT,
        body={"max_tokens": 3},
        max_requests_per_shard=100,
        poll_interval=POLL_INTERVAL,
        work_dir=f"{WORK_DIR}/taskflow",
        destination=f"{WORK_DIR}/taskflow/results",
    )
    def feedback() -> str:
        return FEEDBACK  # or a list of dicts, or an s3:// URI

    @task
    def report(summary: dict) -> str:
        return f"{summary['succeeded']} of {summary['requests']} classified, ${summary['cost_usd']:.4f}"

    report(feedback())
    # [END howto_decorator_openai_batch]


with DAG(dag_id="openai_batch_task_group", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as group_dag:
    # [START howto_task_group_openai_batch_job]
    sentiment = openai_batch_job(
        "sentiment",
        records=FEEDBACK,
        key_field="feedback_id",
        model="gpt-4o-mini",
        messages=PROMPT,
        body={"max_tokens": 3},
        max_requests_per_shard=100,
        poll_interval=POLL_INTERVAL,
        work_dir=f"{WORK_DIR}/task-group",
        destination=f"{WORK_DIR}/task-group/results",
        submit={"retries": 2},  # per-task settings: build={...}, submit={...}, results={...}
    )
    # [END howto_task_group_openai_batch_job]
