"""DAGs the end-to-end test runs on real Airflow components (tests/integration/test_real_airflow.py).

openai_batch_e2e         build 3 shards -> submit (mapped, in a pool that counts deferred tasks) ->
                         collect (reconciled in two worker processes forked from the task's process).
                         The first try of shard 0 is killed right after its batch id is recorded in
                         the task state store, that of shard 1 right after its batch was created and
                         before anything was recorded: the retries must re-attach, not create again.
openai_batch_e2e_cancel  submit the shard given in the run's conf, to be marked failed while deferred.
openai_batch_e2e_busy    one task holding a worker slot until the test opens a gate file.

Inputs come from the environment the test gives the components (OPENAI_BATCH_E2E_*).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

WORK_DIR = os.environ.get("OPENAI_BATCH_E2E_WORK_DIR", "/tmp/openai-batch-e2e")
GATE = Path(os.environ.get("OPENAI_BATCH_E2E_GATE", "/tmp/openai-batch-e2e/gate"))
POOL = os.environ.get("OPENAI_BATCH_E2E_POOL", "openai_batches")
# Map indexes whose first try is killed: after recording the batch, and before recording it.
KILL_AFTER_RECORDING = 0
KILL_BEFORE_RECORDING = 1


def records(count: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i:03d}", "text": f"feedback number {i}"} for i in range(count)]


def build(count: int, per_shard: int) -> OpenAIBatchBuildOperator:
    return OpenAIBatchBuildOperator(
        task_id="build_requests",
        records=records(count),
        key_field="id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Sentiment of: {{ text }}"}],
        body={"max_tokens": 3},
        work_dir=f"{WORK_DIR}/requests",
        max_requests_per_shard=per_shard,
    )


def _kill_this_process() -> None:
    """What a worker crash, an OOM kill or a lost node looks like to Airflow: no goodbye."""
    os.kill(os.getpid(), signal.SIGKILL)


class KilledOnceSubmitOperator(OpenAIBatchSubmitOperator):
    """The real operator, killed on its first try at the two riskiest moments of a submission."""

    def _first_try_of(self, context: Any, map_index: int) -> bool:
        ti = context["ti"]
        return bool(ti.map_index == map_index and ti.try_number == 1)

    def _attach_or_submit(self, hook: Any, context: Any) -> Any:
        found = super()._attach_or_submit(hook, context)
        if self._first_try_of(context, KILL_BEFORE_RECORDING):
            _kill_this_process()
        return found

    def _remember(self, context: Any, batch_id: str, attempt: int) -> None:
        super()._remember(context, batch_id, attempt)
        if self._first_try_of(context, KILL_AFTER_RECORDING):
            _kill_this_process()


with DAG(dag_id="openai_batch_e2e", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    shards = build(count=30, per_shard=10)
    submit = KilledOnceSubmitOperator.partial(
        task_id="submit_batch",
        poll_interval=1,
        pool=POOL,
        retries=1,
        retry_delay=timedelta(seconds=1),
        priority_weight=10,
        weight_rule="absolute",
    ).expand(shard=shards.output)
    OpenAIBatchResultsOperator(
        task_id="collect_results",
        batches=submit.output,
        destination=f"{WORK_DIR}/results",
        poll_interval=1,
        reconcile_processes=2,
    )


with DAG(
    dag_id="openai_batch_e2e_cancel",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
):
    # Rendered as a native object: the shard mapping the test passed in the run's conf.
    OpenAIBatchSubmitOperator(task_id="submit_batch", shard=cast(Any, "{{ dag_run.conf['shard'] }}"), poll_interval=1)


with DAG(dag_id="openai_batch_e2e_busy", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def hold_worker_slot() -> None:
        deadline = time.monotonic() + 180
        while not GATE.exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    hold_worker_slot()
