"""The job ``benchmarks/bench_e2e.py`` runs on real Airflow components: build -> submit (mapped) -> results.

The operators with their defaults, each wrapped to note, in the process that runs it, when its
methods ran and the process's peak RSS (``VmHWM``), as JSON lines in ``BENCH_E2E_PROBE``.
Inputs come from the environment the bench gives the components (``BENCH_E2E_*``).
"""

from __future__ import annotations

import json
import os
import resource
import time
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

WORK_DIR = os.environ.get("BENCH_E2E_WORK_DIR", "/tmp/openai-batch-bench-e2e")
PROBE = os.environ.get("BENCH_E2E_PROBE", f"{WORK_DIR}/probe.jsonl")
SYSTEM = "You classify customer reviews by sentiment. Answer with one word: positive, negative or neutral."


def _note(task: Any, context: Any, method: str, start: float, **extra: Any) -> None:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    ti = context["ti"]
    line = {"task": task.task_id, "map_index": ti.map_index, "method": method, "start": start, "end": time.time(),
            "pid": os.getpid(), "peak_rss_mb": peak, "children_peak_rss_mb": children, **extra}  # fmt: skip
    with open(PROBE, "a") as out:
        out.write(json.dumps(line) + "\n")


def _probed(method: str):
    def wrapper(self: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        event = kwargs.get("event") or {}
        try:
            return getattr(super(type(self), self), method)(context, *args, **kwargs)
        finally:
            _note(self, context, method, start, batch_id=event.get("batch_id"))

    return wrapper


class Build(OpenAIBatchBuildOperator):
    execute = _probed("execute")


class Submit(OpenAIBatchSubmitOperator):
    execute = _probed("execute")
    execute_complete = _probed("execute_complete")


class Results(OpenAIBatchResultsOperator):
    execute = _probed("execute")

    def _deliver(self, context: Any, state: Any) -> Any:
        start = time.time()
        try:
            return super()._deliver(context, state)
        finally:
            _note(self, context, "deliver", start)


# Retries as a deployment sets them: a deferred task whose trigger fires within seconds can be failed
# by the scheduler ("finished with state success, but the task instance's state attribute is
# queued"); its retry re-attaches to the batch (the probes count the tries).
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=1)}

with DAG(
    dag_id="openai_batch_bench_e2e",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=RETRIES,
):
    build = Build(
        task_id="build_requests",
        records=f"{WORK_DIR}/records.jsonl",
        key_field="id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Review: {{ text }}"}],
        body={"max_completion_tokens": 5, "temperature": 0},
        work_dir=f"{WORK_DIR}/work",
    )
    submit = Submit.partial(task_id="submit_batch").expand(shard=build.output)
    Results(task_id="collect_results", batches=submit.output, destination=f"{WORK_DIR}/results")
