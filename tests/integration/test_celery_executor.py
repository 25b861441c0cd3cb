"""The CeleryExecutor across two workers that share no disk, with a worker lost twice mid-job.

api-server, scheduler, dag-processor and triggerer with PostgreSQL (a database of the test's own) as
the metadata database and Celery result backend, Redis as the broker, and two ``airflow celery
worker`` processes, each with its own home, temporary directory and host name; every work and
result file on S3 (moto's server). The components import the provider from the installed wheel.

The scenario (tests/integration/fleet_dags/openai_batch_fleet.py, 10 shards of 20 records):
1. the worker running submit shard 3 is SIGKILLed right after that shard's batch was created;
2. the worker running the collect task is SIGKILLed after it reconciled four shards;
each lost worker is replaced by a new one (a restarted machine: same name, empty disk). The run must
end with one batch per shard and one row per record, equal to a LocalExecutor run of the same DAG.
"""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import POSTGRES_URL, S3_CONN_ID, TEST_API_KEY
from tests.integration.airflow_cluster import REPO, AirflowCluster, ClusterError, EmulatorProcess, wait_until

FLEET_DAGS = Path(__file__).parent / "fleet_dags"
DAG_ID, SUBMIT, COLLECT = "openai_batch_fleet", "submit_batch", "collect_results"
RECORDS, SHARDS, PAUSED_SHARD = 200, 10, 3
WORK_FILE_SUFFIXES = (".jsonl", ".parquet", ".partial", ".gz", ".csv")
# Columns that differ between two runs of one job by nature: ids and clocks.
RUN_SPECIFIC = {
    "job_id",
    "batch_id",
    "request_id",
    "responded_at",
    "batch_created_at",
    "batch_ended_at",
    "collected_at",
}

# Two clusters (Celery, then LocalExecutor) and two lost workers: 3-5 minutes on two busy cores.
pytestmark = pytest.mark.timeout(900)


def _required(what: str, check: Any) -> None:
    """Skip when a local service is missing; on CI (CI=true) fail instead."""
    try:
        check()
    except Exception as err:
        reason = f"{what} is not reachable: {err}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Fleet:
    """What the scenario observed, for the tests to check."""

    state: str = ""
    killed: dict[str, str] = field(default_factory=dict)  # task -> the worker lost while running it
    tries: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    local_rows: list[dict[str, Any]] = field(default_factory=list)
    work_keys: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    package: Path = Path()


class Bucket:
    """The S3 bucket of the ``s3_bucket`` fixture, read directly (boto3) to see what the tasks wrote."""

    def __init__(self, moto_s3: Any, prefix: str) -> None:
        self.connection = moto_s3.connection
        self.client = moto_s3.client
        self.name = prefix.split("@", 1)[1]

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def rows(self, prefix: str) -> list[dict[str, Any]]:
        (key,) = [k for k in self.keys(prefix) if k.endswith("/results.parquet")]
        body = self.client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body)).to_pylist()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, moto_s3, s3_bucket) -> Fleet:
    import psycopg
    import redis

    from tests.integration.celery_workers import REDIS_URL, CeleryWorker, celery_settings, postgres_database

    _required(f"Redis at {REDIS_URL} (set OPENAI_BATCH_TEST_REDIS_URL)", lambda: redis.Redis.from_url(REDIS_URL).ping())
    _required(
        f"PostgreSQL at {POSTGRES_URL} (set OPENAI_BATCH_TEST_POSTGRES_URL)",
        lambda: psycopg.connect(POSTGRES_URL, connect_timeout=3).close(),
    )
    bucket = Bucket(moto_s3, s3_bucket)
    run_prefix = f"fleet-{secrets.token_hex(4)}"
    fleet = Fleet()
    started = time.time()
    queue = f"openai-batch-test-{secrets.token_hex(4)}"
    with EmulatorProcess(in_progress_seconds=1, api_key=TEST_API_KEY) as emulator:
        connections = {"openai_default": emulator.connection(), S3_CONN_ID: bucket.connection}
        with postgres_database(POSTGRES_URL) as database:
            cluster = AirflowCluster(
                tmp_path_factory.mktemp("celery-home"),
                dags_folder=FLEET_DAGS,
                executor="CeleryExecutor",
                database_url=database,
                connections=connections,
                env={
                    **celery_settings(database, queue),
                    "OPENAI_BATCH_FLEET_WORK": f"{s3_bucket}/{run_prefix}/celery",
                    "OPENAI_BATCH_FLEET_PAUSE": "1",
                },
            )
            workers: dict[str, CeleryWorker] = {}
            roots = tmp_path_factory.mktemp("celery-workers")

            def start_worker(name: str) -> None:
                root = roots / f"{name}-{len(list(roots.iterdir()))}"
                workers[name] = CeleryWorker(cluster, name, root, queue).start()

            try:
                with cluster:
                    fleet.package = cluster.package
                    for name in ("worker-1", "worker-2"):
                        start_worker(name)
                    play(cluster, bucket, f"{run_prefix}/celery", workers, start_worker, fleet)
                    fleet.batches = [
                        b for b in emulator.batches() if (b.get("metadata") or {}).get("airflow_dag_id") == DAG_ID
                    ]
            except ClusterError as err:
                logs = "\n".join(f"--- {w.name} ---\n{w.log.read_text()[-3000:]}" for w in workers.values())
                raise AssertionError(f"{err}\n{cluster.describe(dump=True)}\n{logs}") from None
            finally:
                for worker in workers.values():
                    worker.kill()
        fleet.leaked = leaked_work_files(started, [cluster.home, *[w.root for w in workers.values()]], roots)

        # The same DAG on a LocalExecutor (SQLite), no pauses: the reference result.
        with AirflowCluster(
            tmp_path_factory.mktemp("local-home"),
            dags_folder=FLEET_DAGS,
            connections=connections,
            env={"OPENAI_BATCH_FLEET_WORK": f"{s3_bucket}/{run_prefix}/local"},
        ) as local:
            local.wait_for_dag(DAG_ID)
            run_id = local.trigger(DAG_ID)
            assert local.wait_for_run(DAG_ID, run_id, timeout=180) == "success", local.describe()
    fleet.rows = bucket.rows(f"{run_prefix}/celery/results/")
    fleet.local_rows = bucket.rows(f"{run_prefix}/local/results/")
    fleet.work_keys = bucket.keys(f"{run_prefix}/celery/")
    return fleet


def play(cluster: AirflowCluster, bucket: Bucket, prefix: str, workers, start_worker, fleet: Fleet) -> None:
    cluster.wait_for_dag(DAG_ID)
    run_id = cluster.trigger(DAG_ID)
    t0 = time.time()
    for task_id, map_index, marker in ((SUBMIT, PAUSED_SHARD, "submit"), (COLLECT, -1, "collect")):
        wait_until(lambda m=marker: bucket.keys(f"{prefix}/markers/{m}"), 240, f"the {marker} task to pause")
        host = cluster.task_instance(DAG_ID, run_id, task_id, map_index)["hostname"]
        fleet.killed[task_id] = host
        workers[host].kill()
        start_worker(host)
        print(f"[celery] killed {host} at {time.time() - t0:.0f}s", flush=True)
    fleet.state = cluster.wait_for_run(DAG_ID, run_id, timeout=240)
    print(f"[celery] run ended at {time.time() - t0:.0f}s", flush=True)
    for ti in cluster.task_instances(DAG_ID, run_id):
        path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
        if ti["map_index"] >= 0:
            path += f"/{ti['map_index']}"
        fleet.tries[(ti["task_id"], ti["map_index"])] = cluster.api("GET", f"{path}/tries")["task_instances"]


def leaked_work_files(since: float, own: list[Path], roots: Path) -> list[str]:
    """
    This job's work or result files written since ``since`` on a shared local path (the repo, the
    DAG folder, the temp dir): its shard, stage and result files all live under names that carry the
    DAG's id (the job id starts with it). Other processes' files in the temp dir do not count.
    """
    allowed = [path.resolve() for path in (*own, roots)]
    leaks = []
    for top in (REPO, Path(tempfile.gettempdir())):
        for folder, dirs, files in os.walk(top):
            here = Path(folder).resolve()
            dirs[:] = [d for d in dirs if not d.startswith((".venv", ".git", "pytest-of-")) and here / d not in allowed]
            for name in files:
                path = here / name
                where = str(path.relative_to(top.resolve()))
                ours = DAG_ID in where
                if ours and name.endswith(WORK_FILE_SUFFIXES) and _modified_since(path, since):
                    leaks.append(str(path))
    return leaks


def _modified_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except OSError:
        return False


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = ({k: v for k, v in row.items() if k not in RUN_SPECIFIC} for row in rows)
    return sorted(kept, key=lambda row: row["custom_id"])


def test_the_run_succeeds_after_losing_a_worker_twice(fleet):
    assert fleet.state == "success"
    assert set(fleet.killed) == {SUBMIT, COLLECT}, fleet.killed
    for task in ((SUBMIT, PAUSED_SHARD), (COLLECT, -1)):
        tries = fleet.tries[task]
        assert [t["try_number"] for t in tries] == [1, 2], tries
        assert tries[0]["hostname"] == fleet.killed[task[0]] and tries[0]["state"] == "failed", tries[0]
        assert tries[1]["state"] == "success", tries[1]


def test_the_two_workers_ran_tasks_of_the_same_job(fleet):
    hosts = {t["hostname"] for tries in fleet.tries.values() for t in tries}
    assert hosts == {"worker-1", "worker-2"}, hosts
    submit_hosts = {tries[-1]["hostname"] for (task, _), tries in fleet.tries.items() if task == SUBMIT}
    assert len(submit_hosts) == 2, fleet.tries


def test_each_shard_has_exactly_one_batch(fleet):
    keys = sorted(b["metadata"]["idempotency_key"] for b in fleet.batches)
    assert len(keys) == SHARDS and len(set(keys)) == SHARDS, keys
    assert {b["status"] for b in fleet.batches} == {"completed"}


def test_each_record_has_exactly_one_row_equal_to_a_local_executor_run(fleet):
    assert sorted(row["custom_id"] for row in fleet.rows) == [f"r{i:03d}" for i in range(RECORDS)]
    assert {row["status"] for row in fleet.rows} == {"succeeded"}
    assert _comparable(fleet.rows) == _comparable(fleet.local_rows)


def test_work_and_result_files_live_on_object_storage_only(fleet):
    shards = [k for k in fleet.work_keys if "/requests/" in k and k.endswith(".jsonl")]
    assert len(shards) == SHARDS, fleet.work_keys
    assert any(k.endswith("/results.parquet") for k in fleet.work_keys), fleet.work_keys
    assert fleet.leaked == []


def test_the_components_run_the_installed_wheel(fleet):
    assert "site-packages" in fleet.package.parts
    assert not fleet.package.is_relative_to(REPO / "airflow_provider_openai_batch")


def test_the_leak_scan_finds_a_work_file_left_on_a_shared_path(tmp_path):
    planted = Path(tempfile.gettempdir()) / f"{DAG_ID}__manual-{secrets.token_hex(4)}-shard-00000.jsonl"
    planted.write_text("{}\n")
    try:
        assert str(planted.resolve()) in leaked_work_files(time.time() - 60, [], tmp_path)
    finally:
        planted.unlink()
