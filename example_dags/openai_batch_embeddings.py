"""
Embeddings: embed a document set at Batch prices and keep the vectors as Parquet on S3.

build_requests  -> one /v1/embeddings request per help-centre article (title and text); embedding
                   jobs also respect the 50,000-inputs-per-batch limit when splitting
submit_batch    -> one mapped task per shard, waiting on the triggerer
collect_results -> one row per article with its vector (``embedding``: list<float32>) in
                   ``{destination}/{job_id}/results.parquet``, written atomically, ready for a
                   vector store load or a similarity query in DuckDB/Spark

The destination is any ObjectStoragePath URI, e.g. ``s3://aws_default@my-bucket/embeddings``
(the connection id before the ``@``), set with OPENAI_BATCH_EMBEDDINGS_DESTINATION.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

DOCUMENTS = os.environ.get("OPENAI_BATCH_EMBEDDINGS_INPUT", str(Path(__file__).parent / "data" / "help_articles.jsonl"))
DESTINATION = os.environ.get("OPENAI_BATCH_EMBEDDINGS_DESTINATION", "s3://aws_default@openai-batch/embeddings")
WORK_DIR = os.environ.get("OPENAI_BATCH_WORK_DIR", "/tmp/openai-batch")
POLL_INTERVAL = float(os.environ.get("OPENAI_BATCH_POLL_INTERVAL", "60"))
CACHE = os.environ.get("OPENAI_BATCH_CACHE") or None  # the answer cache: vectors of unchanged articles are reused

with DAG(
    dag_id="openai_batch_embeddings",
    description="Embed a document set and write the vectors as Parquet on S3",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["openai-batch", "example"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
) as dag:
    build = OpenAIBatchBuildOperator(
        task_id="build_requests",
        records=DOCUMENTS,
        key_field="doc_id",
        endpoint="/v1/embeddings",
        model="text-embedding-3-small",
        prompt="{{ title }}\n\n{{ text }}",
        body={"dimensions": 256},  # shorter vectors: cheaper to store and search, little loss
        work_dir=f"{WORK_DIR}/requests",
        cache=CACHE,
    )

    submit = OpenAIBatchSubmitOperator.partial(task_id="submit_batch", poll_interval=POLL_INTERVAL).expand(
        shard=build.output
    )

    collect = OpenAIBatchResultsOperator(
        task_id="collect_results",
        batches=submit.output,
        destination=DESTINATION,
        poll_interval=POLL_INTERVAL,
    )
