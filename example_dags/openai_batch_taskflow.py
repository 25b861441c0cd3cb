"""
The quickstart's job as TaskFlow: a function returns where the records are, and
``@task.openai_batch`` adds the build, the mapped submit and the collect after it; the summary
flows on to a task of your own. ``openai_batch_quickstart`` does the same job with the task-group
factory (``openai_batch_job``), ``openai_batch_pools`` with the three operators written out.

``make demo DAG=openai_batch_taskflow`` runs it against the emulator.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

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
