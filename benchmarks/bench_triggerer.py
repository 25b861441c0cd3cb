"""One Airflow triggerer holding 1,000 concurrent batch waits against the emulator.

    .venv/bin/python benchmarks/bench_triggerer.py [--batches 1000] [--poll-interval 15] [--rounds 4]
        [--schedule backoff|fixed]

A real ``airflow triggerer`` process runs ``OpenAIBatchTrigger`` for every task instance of a
mapped deferrable ``OpenAIBatchSensor``; the emulator (in this process, with a request counter)
keeps the batches in progress. The batches are created just before the triggerer starts and the
triggers read on the backing-off schedule (``--schedule fixed``: as before it, a read at once and
then one per interval). Targets from issues 4 and 17:

- API calls: at most one status read per batch per poll interval once the schedule reaches it,
  and no more calls per batch in the first hour of the wait (start-up included, the rest of the
  hour at the measured steady rate) than the fixed schedule;
- memory: the triggerer's RSS (its whole process tree) grows by at most 100 MB;
- CPU: under 1 s of triggerer CPU per poll round (every batch read once).

The task instances and their triggers are written straight into a private metadata database, as
the scheduler would after 1,000 tasks deferred — running 1,000 tasks first would only measure the
workers. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from airflow_provider_openai_batch.core.polling import BACKOFF_SHARE  # noqa: E402
from tests.integration.airflow_cluster import free_port, migrated_database  # noqa: E402

DAG_ID = "bench_triggerer"
API_KEY = "sk-bench"
RETRIEVE = re.compile(r"^/v1/batches/(batch_[A-Za-z0-9]+)$")
LIST = "/v1/batches"

DAG_FILE = """
import json, os
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider_openai_batch.sensors.batch import OpenAIBatchSensor

with DAG("bench_triggerer", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    OpenAIBatchSensor.partial(task_id="wait", deferrable=True).expand(
        batch_id=json.load(open(os.environ["BENCH_BATCH_IDS"]))
    )
"""


class RequestCounter:
    """ASGI middleware counting status reads: per batch id (``GET /v1/batches/{id}``) and listings."""

    def __init__(self, app: Any, counts: Counter[str]) -> None:
        self.app = app
        self.counts = counts
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            key = "list" if path == LIST else (match.group(1) if (match := RETRIEVE.match(path)) else None)
            if key:
                with self.lock:
                    self.counts[key] += 1
        await self.app(scope, receive, send)


def configure(home: Path, emulator_url: str, batches: int) -> dict[str, str]:
    """The environment of this process (set before Airflow is imported) and of the triggerer."""
    from cryptography.fernet import Fernet

    (home / "dags").mkdir(parents=True)
    (home / "dags" / "bench_triggerer.py").write_text(DAG_FILE)
    shutil.copyfile(migrated_database(), home / "airflow.db")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__TRIGGERER__CAPACITY": str(batches + 100),
        "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": str(batches + 100),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {"conn_type": "openai_batch", "host": emulator_url, "password": API_KEY}
        ),
        "BENCH_BATCH_IDS": str(home / "batch_ids.json"),
    }
    os.environ.update(env)
    return env


def create_batches(base_url: str, count: int) -> dict[str, int]:
    """``count`` batches, id to ``created_at``."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=API_KEY)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body})
    uploaded = client.files.create(file=("in.jsonl", (line + "\n").encode()), purpose="batch")
    made = (
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        for _ in range(count)
    )
    return {batch.id: batch.created_at for batch in made}


def mapped_task_instances() -> tuple[Any, list[Any]]:
    """Serialize the DAG, create a run and its mapped task instances, as the dag-processor and scheduler do."""
    from airflow import settings
    from airflow._shared.timezones import timezone
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun, get_or_create_dagrun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    settings.configure_orm()
    assert settings.Session is not None
    session = settings.Session()
    manager = DagBundlesManager()
    manager.sync_bundles_to_db(session=session)
    session.commit()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        sync_bag_to_db(
            BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
            bundle.name,
            bundle.version,
        )
    dag = DBDagBag().get_latest_version_of_dag(DAG_ID, session=session)
    assert dag is not None, f"{DAG_ID} was not serialized"
    now = timezone.utcnow()
    run = get_or_create_dagrun(
        dag=dag,
        run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=None, run_after=now),
        logical_date=None,
        data_interval=None,
        run_after=now,
        start_date=now,
        conf={},
        triggered_by=DagRunTriggeredByType.TEST,
        triggering_user_name="bench",
        session=session,
    )
    run.update_state(session=session)  # expands the mapped task into one instance per batch
    session.commit()
    tis = session.query(TaskInstance).filter(TaskInstance.dag_id == DAG_ID, TaskInstance.map_index >= 0).all()
    return session, tis


def defer(session: Any, tis: list[Any], batches: dict[str, int], poll_interval: float, fixed: bool) -> None:
    """What 1,000 sensors deferring at once leave in the database: one trigger per task instance."""
    from airflow.models.trigger import Trigger
    from airflow.utils.state import TaskInstanceState

    from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

    deadline = time.time() + 24 * 3600
    batch_ids = list(batches)
    for ti in tis:
        batch_id = batch_ids[ti.map_index]
        trigger = Trigger.from_object(
            OpenAIBatchTrigger(
                batch_id,
                poll_interval=poll_interval,
                deadline=deadline,
                cancel_on_kill=False,
                # The sensor hands over the batch's creation time; the fixed schedule read at once.
                created_at=None if fixed else batches[batch_id],
                fixed_schedule=fixed,
            )
        )
        session.add(trigger)
        session.flush()
        ti.trigger_id = trigger.id
        ti.state = TaskInstanceState.DEFERRED
        ti.next_method = "execute_complete"
        ti.try_number = 1
    session.commit()


def all_running(session: Any, counts: Counter[str], batch_ids: list[str], fixed: bool, marks: dict) -> bool:
    """Every trigger taken by the triggerer and polling: each batch read once (fixed), or a page listed since."""
    from airflow.models.trigger import Trigger

    if fixed:
        return len(set(counts) & set(batch_ids)) == len(batch_ids)
    if "taken" not in marks:
        session.expire_all()
        if session.query(Trigger).filter(Trigger.triggerer_id.is_(None)).count():
            return False
        marks["taken"] = counts["list"]  # the listings made by the time the last trigger was taken
    return counts["list"] > marks["taken"]


def tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def rss_mb(pid: int) -> float:
    return sum(p.memory_info().rss for p in tree(pid)) / 2**20


def cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each process of the triggerer: the job, its trigger runner, …"""
    return {p.pid: sum(p.cpu_times()[:2]) for p in tree(pid)}


def sample_rss(pid: int, seconds: float, every: float = 0.5) -> list[float]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        samples.append(rss_mb(pid))
        time.sleep(every)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=4, help="poll rounds measured once every trigger runs")
    parser.add_argument("--schedule", choices=("backoff", "fixed"), default="backoff")
    parser.add_argument("--keep", action="store_true", help="keep the private AIRFLOW_HOME (logs) afterwards")
    args = parser.parse_args()

    from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings

    counts: Counter[str] = Counter()
    settings = EmulatorSettings(validating_seconds=0, in_progress_seconds=10 * 24 * 3600, api_key=API_KEY)
    home = Path(tempfile.mkdtemp(prefix="bench-triggerer-"))
    server = EmulatorServer(settings)
    server.app.add_middleware(RequestCounter, counts=counts)
    triggerer: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        env = configure(home, server.base_url, args.batches)
        batches = create_batches(server.base_url, args.batches)
        batch_ids = list(batches)
        (home / "batch_ids.json").write_text(json.dumps(batch_ids))
        session, tis = mapped_task_instances()
        print(f"{len(tis)} task instances of {DAG_ID}; starting the triggerer", flush=True)

        log = (home / "triggerer.log").open("wb")
        triggerer = subprocess.Popen(
            [sys.executable, "-m", "airflow", "triggerer"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while b"Starting the triggerer" not in (home / "triggerer.log").read_bytes():
            assert triggerer.poll() is None, (home / "triggerer.log").read_text()[-3000:]
            time.sleep(0.5)
        baseline = statistics.median(sample_rss(triggerer.pid, 10))
        print(f"triggerer up, idle RSS {baseline:.1f} MB; deferring {len(tis)} task instances", flush=True)

        defer(session, tis, batches, args.poll_interval, args.schedule == "fixed")
        loading_started = time.monotonic()
        marks: dict[str, int] = {}
        while not all_running(session, counts, batch_ids, args.schedule == "fixed", marks):
            assert triggerer.poll() is None, (home / "triggerer.log").read_text()[-3000:]
            assert time.monotonic() - loading_started < 300, f"only {len(counts)} batches read after 300 s"
            time.sleep(1)
        loaded_in = time.monotonic() - loading_started
        print(
            f"all {len(batch_ids)} triggers polling after {loaded_in:.1f} s; measuring {args.rounds} rounds", flush=True
        )

        # Until every batch is old enough for the schedule to read it once per interval, then whole rounds.
        warm_up_end = min(batches.values()) + args.poll_interval / BACKOFF_SHARE + args.poll_interval
        time.sleep(max(warm_up_end - time.time(), args.poll_interval))
        warm_up_seconds = time.monotonic() - loading_started
        warm_up_calls = sum(counts.values())
        window = args.rounds * args.poll_interval
        before_counts, before_cpu = counts.copy(), cpu_seconds(triggerer.pid)
        peak_samples = sample_rss(triggerer.pid, window)
        after_counts, after_cpu = counts.copy(), cpu_seconds(triggerer.pid)

        spent = {
            ("job" if pid == triggerer.pid else f"child {pid}"): after_cpu[pid] - before_cpu.get(pid, 0.0)
            for pid in after_cpu
        }
        per_batch = [(after_counts[b] - before_counts[b]) / args.rounds for b in batch_ids]
        lists_per_round = (after_counts["list"] - before_counts["list"]) / args.rounds
        calls_per_round = sum(per_batch) + lists_per_round
        # The first hour of the wait: the calls made from deferral to the end of the warm-up, the
        # rest of the hour at the measured steady rate.
        first_hour = warm_up_calls + calls_per_round / args.poll_interval * (3600 - warm_up_seconds)
        result = {
            "batches": len(batch_ids),
            "poll_interval_s": args.poll_interval,
            "rounds_measured": args.rounds,
            "triggers_loaded_in_s": round(loaded_in, 1),
            "api_calls_per_poll_round": round(calls_per_round, 1),
            "list_calls_per_poll_round": round(lists_per_round, 1),
            "api_calls_per_batch_per_poll": round(calls_per_round / len(batch_ids), 4),
            "schedule": args.schedule,
            "warm_up_s": round(warm_up_seconds, 1),
            "warm_up_calls": warm_up_calls,
            "api_calls_per_batch_per_hour": round(first_hour / len(batch_ids), 3),
            "api_calls_per_batch_per_hour_steady": round(
                calls_per_round / len(batch_ids) * 3600 / args.poll_interval, 3
            ),
            "retrieves_per_batch_per_poll_max": round(max(per_batch), 3),
            "triggerer_rss_idle_mb": round(baseline, 1),
            "triggerer_rss_peak_mb": round(max(peak_samples), 1),
            "triggerer_rss_growth_mb": round(max(peak_samples) - baseline, 1),
            "cpu_per_poll_round_s": round(sum(spent.values()) / args.rounds, 3),
            "cpu_per_poll_round_by_process_s": {
                name: round(seconds / args.rounds, 3) for name, seconds in spent.items()
            },
            "cpu_count": psutil.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        print(json.dumps(result, indent=2))
        # A poll may land just inside or outside the window: allow one extra read per batch over the rounds.
        verdict = {
            "api_calls": result["retrieves_per_batch_per_poll_max"] <= 1 + 1 / args.rounds
            and result["api_calls_per_batch_per_poll"] <= 1,
            "rss": result["triggerer_rss_growth_mb"] <= 100,
            "cpu": result["cpu_per_poll_round_s"] < 1.0,
        }
        print("targets met:", verdict)
    finally:
        if triggerer is not None and triggerer.poll() is None:
            os.killpg(triggerer.pid, signal.SIGTERM)
            try:
                triggerer.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(triggerer.pid, signal.SIGKILL)
        server.stop()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
