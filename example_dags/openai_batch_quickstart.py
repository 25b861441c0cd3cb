"""
Quickstart: classify customer feedback by sentiment with the OpenAI Batch API (half the price of
the synchronous API), in one call. ``openai_batch_job`` adds a task group of three tasks:

sentiment.build_requests  -> one chat request per feedback row, custom_id = feedback_id, in shards
sentiment.submit_batch    -> one mapped task per shard: upload, create the batch, wait on the triggerer
sentiment.collect_results -> join outputs to requests by custom_id, retry what is worth retrying,
                             write one row per feedback to Parquet (and to a SQL table when a
                             connection is given)

``openai_batch_pools`` writes the same three operators out, one by one.

Run it offline against the emulator with ``make demo``; against OpenAI, create the
``openai_default`` connection with your API key. Paths and polling come from the environment so
the same file serves the demo, the tests and a real deployment.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_openai_batch.decorators.openai_batch import openai_batch_job

FEEDBACK = os.environ.get(
    "OPENAI_BATCH_QUICKSTART_INPUT", str(Path(__file__).parent / "data" / "customer_feedback.jsonl")
)
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
# A common-sql connection (SQLite, Postgres, …) to also load the rows into a table; unset: Parquet only.
RESULTS_CONN_ID = os.environ.get("OPENAI_BATCH_RESULTS_CONN_ID") or None
# A folder (local or object storage) for the answer cache: a rerun sends only new or changed requests.
CACHE = os.environ.get("OPENAI_BATCH_CACHE") or None

SYSTEM_PROMPT = "You classify customer feedback by sentiment. Answer with one of: positive, negative, neutral."

with DAG(
    dag_id="openai_batch_quickstart",
    description="Sentiment of customer feedback through the OpenAI Batch API",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    # [START howto_task_group_openai_batch_job]
    sentiment = openai_batch_job(
        "sentiment",
        records=FEEDBACK,
        key_field="feedback_id",
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "{{ text }}"},
        ],
        body={"max_tokens": 3, "temperature": 0},
        # Two shards of 100 show the mapped submit; real jobs keep the default of 50,000.
        max_requests_per_shard=100,
        cache=CACHE,  # unset: no cache
        poll_interval=POLL_INTERVAL,
        work_dir=WORK_DIR,
        destination=f"{WORK_DIR}/results",
        results={"sql_conn_id": RESULTS_CONN_ID, "table": "feedback_sentiment"},
    )
    # [END howto_task_group_openai_batch_job]
