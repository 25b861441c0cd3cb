"""
Concurrency: at most N batches in flight on the OpenAI account, through an Airflow pool.

build_requests  -> 200 feedback texts in shards of 25: eight batches to run
submit_batch    -> one mapped task per shard, in the pool ``openai_batches``; a deferred task keeps
                   its pool slot while its batch waits, so only N batches are ever in flight
collect_results -> one row per feedback, as in the quickstart

Create the pool once, counting deferred tasks (the default pool does not):

    airflow pools set openai_batches 3 "Batches in flight on the OpenAI account" --include-deferred

or ``POST /api/v2/pools {"name": "openai_batches", "slots": 3, "include_deferred": true}``. Every DAG
whose submit tasks use the pool shares the cap: the scheduler starts the fourth batch when one of
the first three ends — no queue script, and no worker slot held meanwhile. The pool's name comes
from OPENAI_BATCH_POOL.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

FEEDBACK = os.environ.get(
    "OPENAI_BATCH_QUICKSTART_INPUT", str(Path(__file__).parent / "data" / "customer_feedback.jsonl")
)
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
POOL = os.environ.get("OPENAI_BATCH_POOL", "openai_batches")

with DAG(
    dag_id="openai_batch_pools",
    description="At most N batches in flight, through a pool that counts deferred tasks",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    build = OpenAIBatchBuildOperator(
        task_id="build_requests",
        records=FEEDBACK,
        key_field="feedback_id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Answer positive, negative or neutral."},
            {"role": "user", "content": "{{ text }}"},
        ],
        body={"max_tokens": 3, "temperature": 0},
        work_dir=f"{WORK_DIR}/requests",
        max_requests_per_shard=25,  # small shards only to show the cap; real jobs keep 50,000
    )

    # [START howto_submit_with_pool]
    submit = OpenAIBatchSubmitOperator.partial(
        task_id="submit_batch",
        pool=POOL,  # one slot per batch in flight, held while deferred
        poll_interval=POLL_INTERVAL,
    ).expand(shard=build.output)
    # [END howto_submit_with_pool]

    collect = OpenAIBatchResultsOperator(
        task_id="collect_results",
        batches=submit.output,
        destination=f"{WORK_DIR}/results",
        poll_interval=POLL_INTERVAL,
    )
