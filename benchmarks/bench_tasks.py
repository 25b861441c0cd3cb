"""Peak RSS of each task kind — build, submit, results — each run in a fresh process, as a worker runs a task.

    .venv/bin/python benchmarks/bench_tasks.py --records 50000 [--dir DIR]

A fresh child process imports Airflow's task runner (what every task process has loaded before
the operator's code runs), then the operator, and calls its ``execute`` as the task runner
would; its peak RSS (``VmHWM``) is read at the end, and that of the reconcile workers it forked
from ``RUSAGE_CHILDREN``. The three tasks of one job run in turn against the emulator (in its own
process, batches done at once): the build writes the shards, one submit task uploads shard 0 and
creates its batch (it then defers: the child stops there, as a task process does), the other
shards are submitted here, unmeasured, and the results task collects them all with its default
settings. The benchmark suite (``suite.py --only task_rss``) runs it at 50,000 and 1,200,000
requests; this file prints one JSON object per task.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_build  # noqa: E402

TASKS = ("build", "submit", "results")
CONN_ID = "bench_tasks_openai"


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_records(n: int, path: Path) -> None:
    """The job's records as a JSONL file the build task reads streamed (not measured)."""
    import orjson

    with path.open("wb", buffering=1 << 20) as out:
        for record in bench_build.records(n):
            out.write(orjson.dumps(record) + b"\n")


def _context() -> dict[str, Any]:
    from tests.unit.operators.fakes import RecordingTI

    return {"ti": RecordingTI(dag_id="bench_tasks", task_id="task", map_index=0)}


def run_build(work: Path) -> dict[str, Any]:
    from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator

    operator = OpenAIBatchBuildOperator(
        task_id="build",
        records=str(work / "records.jsonl"),
        key_field="id",
        endpoint=bench_build.URL,
        model=bench_build.MODEL,
        messages=bench_build.MESSAGES,
        body=bench_build.BODY,
        work_dir=str(work / "work"),
        job_id="bench-tasks",
    )
    shards = operator.execute(_context())
    (work / "shards.json").write_text(json.dumps(shards))
    return {"shards": len(shards)}


def run_submit(work: Path) -> dict[str, Any]:
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator

    shard = json.loads((work / "shards.json").read_text())[0]
    operator = OpenAIBatchSubmitOperator(task_id="submit", shard=shard, conn_id=CONN_ID, poll_interval=1)
    with contextlib.suppress(TaskDeferred):  # the task process ends here; the triggerer waits
        operator.execute(_context())
    return {}


def run_results(work: Path) -> dict[str, Any]:
    from airflow_provider_openai_batch.operators.results import OpenAIBatchResultsOperator

    items = json.loads((work / "batches.json").read_text())
    operator = OpenAIBatchResultsOperator(
        task_id="results", batches=items, destination=str(work / "results"), conn_id=CONN_ID
    )
    summary = operator.execute(_context())
    if summary["succeeded"] != summary["requests"]:  # measure the path of a job that was answered
        raise RuntimeError(f"only {summary['succeeded']} of {summary['requests']} requests succeeded: {summary}")
    return {"rows": summary["requests"], "processes": operator.reconcile_processes}


def child(task: str, work: Path) -> None:
    """One task in this fresh process: the task runner's imports, then the operator's execute."""
    import airflow.sdk.execution_time.task_runner  # noqa: F401  (what every task process has loaded)
    from airflow.sdk.plugins_manager import integrate_macros_plugins

    integrate_macros_plugins()  # as the task runner does before it runs the operator
    start = time.perf_counter()
    extra = {"build": run_build, "submit": run_submit, "results": run_results}[task](work)
    seconds = time.perf_counter() - start
    figures = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}
    if task == "results":  # its reconcile workers (any other child would be a short-lived helper)
        figures["worker_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(figures))


def submit_the_rest(work: Path) -> None:
    """Every shard's batch, submitted and waited for here (unmeasured): what the results task collects."""
    from airflow_provider_openai_batch.core.handoffs import ShardRef, Submitted
    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
    from airflow_provider_openai_batch.operators.batch_lifecycle import submit_shard
    from airflow_provider_openai_batch.triggers.events import batch_ref

    hook = OpenAIBatchHook(CONN_ID)
    items = []
    for shard in json.loads((work / "shards.json").read_text()):
        ref = ShardRef.from_json(shard)
        batch = submit_shard(hook, ref, {"bench": "tasks"})  # shard 0 finds the batch its submit task created
        while batch.status not in ("completed", "expired", "cancelled", "failed"):
            time.sleep(0.2)
            batch = hook.get_batch(batch.id)
        items.append(Submitted(shard=ref, batch=batch_ref(batch)).to_json())
    (work / "batches.json").write_text(json.dumps(items))


def measure(task: str, work: Path, env: dict[str, str]) -> dict[str, Any]:
    os.sync()
    command = [sys.executable, __file__, "--child", task, "--dir", str(work)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"the {task} task failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(n: int, work: Path) -> dict[str, dict[str, Any]]:
    """The three tasks of one job of ``n`` requests, each in a fresh process: their figures by task."""
    from tests.integration.airflow_cluster import EmulatorProcess

    work.mkdir(parents=True, exist_ok=True)
    write_records(n, work / "records.jsonl")
    # An organisation whose enqueued-token limit the whole job fits in: at the emulator's default
    # (2M tokens for gpt-4o-mini) even one 50k shard is refused, and the results task would only
    # write failed rows.
    knobs = {
        "validating_seconds": 0,
        "in_progress_seconds": 0,
        "finalizing_seconds": 0,
        "enqueued_token_limit": 10**12,
    }
    figures = {}
    with EmulatorProcess(**knobs) as emulator:
        env = {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(emulator.connection())}
        os.environ.update(env)
        figures["build"] = measure("build", work, env)
        figures["submit"] = measure("submit", work, env)
        submit_the_rest(work)
        figures["results"] = measure("results", work, env)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--child", choices=TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dir)
        return 0
    work = args.dir or Path(tempfile.mkdtemp(prefix="openai-batch-bench-tasks-"))
    for task, figures in run(args.records, work).items():
        print(json.dumps({"task": task, "records": args.records, **figures}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
