"""The job tests/integration/test_celery_executor.py runs on two Celery workers, and again on a LocalExecutor.

openai_batch_fleet  build 200 records into 10 shards -> submit (mapped) -> collect into Parquet, with
                    every work and result file on object storage (OPENAI_BATCH_FLEET_WORK, an s3:// URL).

With OPENAI_BATCH_FLEET_PAUSE set, two first tries stop where a lost machine hurts most, each after
leaving a marker object under ``<work>/markers/`` so the test knows when to kill the worker running
it: submit shard 3 right after its batch is created (before anything is recorded), and the collect
task in the middle of reconciling (four shards done, six to go).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

WORK = os.environ.get("OPENAI_BATCH_FLEET_WORK", "file:///tmp/openai-batch-fleet")
PAUSE = bool(os.environ.get("OPENAI_BATCH_FLEET_PAUSE"))
RECORDS, SHARDS = 200, 10
PAUSED_SUBMIT_SHARD = 3
PAUSED_COLLECT_AT_SHARD = 4


def _pause_here(context: Any, marker: str) -> None:
    """On a first try with pausing on: leave the marker and wait to be killed."""
    if not PAUSE or context["ti"].try_number != 1:
        return
    ObjectStoragePath(f"{WORK}/markers/{marker}").write_text(context["ti"].task_id)
    time.sleep(600)


class PausedSubmitOperator(OpenAIBatchSubmitOperator):
    def _attach_or_submit(self, hook: Any, context: Any) -> Any:
        found = super()._attach_or_submit(hook, context)
        if context["ti"].map_index == PAUSED_SUBMIT_SHARD:
            _pause_here(context, "submit")
        return found


class PausedResultsOperator(OpenAIBatchResultsOperator):
    def _run(self, hook: Any, job_id: str, item: Mapping[str, Any], attempt: int) -> Any:
        if item.shard.index == PAUSED_COLLECT_AT_SHARD:
            _pause_here(self._context, "collect")
        return super()._run(hook, job_id, item, attempt)

    def execute(self, context: Any) -> Any:
        self._context = context
        return super().execute(context)


with DAG(
    dag_id="openai_batch_fleet",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    shards = OpenAIBatchBuildOperator(
        task_id="build_requests",
        records=[{"id": f"r{i:03d}", "text": f"review number {i}"} for i in range(RECORDS)],
        key_field="id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Sentiment of: {{ text }}"}],
        body={"max_tokens": 3},
        work_dir=f"{WORK}/requests",
        max_requests_per_shard=RECORDS // SHARDS,
    )
    submitted = PausedSubmitOperator.partial(task_id="submit_batch", poll_interval=1).expand(shard=shards.output)
    PausedResultsOperator(
        task_id="collect_results", batches=submitted.output, destination=f"{WORK}/results", poll_interval=1
    )
