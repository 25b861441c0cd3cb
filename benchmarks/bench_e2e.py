"""The headline job end to end: 1,200,000 chat requests (24 shards) through real Airflow components.

    .venv/bin/python benchmarks/bench_e2e.py [--records 1200000]

api-server, scheduler, dag-processor and triggerer (``tests/integration/airflow_cluster.py``),
LocalExecutor with two tasks at a time, run ``benchmarks/e2e_dags/openai_batch_bench_e2e.py``:
build -> submit (mapped, one task per shard, deferring to the triggerer) -> results, every
operator with its defaults. The emulator runs in this process with no validating, in-progress or
finalizing time, so all it costs is its own work: taking the uploads, checking each input file when
its batch is created, writing its answers at the first read after that, serving the downloads. Its
own time is the time during which it was serving at least one call (the union of the calls'
spans; checking and answering are timed apart too): the floor no client of the API can beat. Reported:

- wall: from the trigger to the results file in place (its atomic rename);
- build, submit (first submit task's start to the last one's deferral), the emulator's own time,
  notice latency (a batch's answers written to its submit task resuming: the trigger's read, its
  event, the scheduler and a task process), reconcile (the results task's start to its delivery)
  and delivery; the gaps between them are Airflow's scheduling;
- peak RSS of each task kind (the largest ``VmHWM`` of its task processes, which are forked from
  the executor's and count the pages they share with it), and of the reconcile workers;
- API calls by kind.

``seconds`` in the row is the overhead beyond the emulator's own time; ``floor_seconds`` that time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_build  # noqa: E402

DAG_ID = "openai_batch_bench_e2e"
DAGS = ROOT / "benchmarks" / "e2e_dags"
ENQUEUED_TOKEN_LIMIT = 10**12  # an organisation whose limit the whole job fits in: no token-limit waits
TASKS = {"build_requests": "build", "submit_batch": "submit", "collect_results": "results"}


class CallCounter:
    """ASGI middleware counting the API calls by method and route (ids left out), and when each was served."""

    def __init__(self, app: Any, counts: Counter[str], served: list[tuple[float, float]]) -> None:
        self.app = app
        self.counts = counts
        self.served = served
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")[2:]
        route = "/".join(part if not part.startswith(("batch_", "file-")) else "{id}" for part in parts)
        start = time.time()
        try:
            await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.counts[f"{scope['method']} /v1/{route}"] += 1
                self.served.append((start, time.time()))


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """The time during which at least one of ``spans`` was open (their union's length)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


class EmulatorClock:
    """Times the emulator's own work: each input file's check and each batch's answers."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.answered: dict[str, float] = {}  # batch id -> when its answers were written
        self.lock = threading.Lock()

    def install(self) -> None:
        from airflow_provider_openai_batch.emulator import engine

        scan, process = engine.scan_input, engine.process_batch

        def timed_scan(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return scan(*args, **kwargs)
            finally:
                self._add("scan", start)

        def timed_process(record: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return process(record, *args, **kwargs)
            finally:
                self._add("answers", start)
                self.answered[record.id] = time.time()

        engine.scan_input, engine.process_batch = timed_scan, timed_process

    def _add(self, kind: str, start: float) -> None:
        with self.lock:
            self.spans.append((kind, start, time.time()))

    def seconds(self, kind: str | None = None) -> float:
        return sum(end - start for name, start, end in self.spans if kind in (None, name))


def write_records(n: int, path: Path) -> None:
    import orjson

    with path.open("wb", buffering=1 << 20) as out:
        for record in bench_build.records(n):
            out.write(orjson.dumps(record) + b"\n")


def run(n: int, work: Path, timeout: float) -> dict[str, Any]:
    from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings
    from tests.integration.airflow_cluster import AirflowCluster

    work.mkdir(parents=True, exist_ok=True)
    write_records(n, work / "records.jsonl")
    probe = work / "probe.jsonl"
    probe.unlink(missing_ok=True)
    clock = EmulatorClock()
    clock.install()
    calls: Counter[str] = Counter()
    served: list[tuple[float, float]] = []
    settings = EmulatorSettings(
        validating_seconds=0, in_progress_seconds=0, finalizing_seconds=0, enqueued_token_limit=ENQUEUED_TOKEN_LIMIT
    )
    server = EmulatorServer(settings, data_dir=work / "emulator")
    server.app.add_middleware(CallCounter, counts=calls, served=served)
    with server:
        connection = {"conn_type": "openai_batch", "host": server.base_url, "password": "sk-bench"}
        env = {"BENCH_E2E_WORK_DIR": str(work), "BENCH_E2E_PROBE": str(probe)}
        with AirflowCluster(
            work / "airflow", dags_folder=DAGS, parallelism=2, connections={"openai_default": connection}, env=env
        ) as cluster:
            cluster.wait_for_dag(DAG_ID, timeout=120)
            triggered = time.time()
            run_id = cluster.trigger(DAG_ID)
            state = cluster.wait_for_run(DAG_ID, run_id, timeout=timeout)
            if state != "success":
                raise RuntimeError(
                    f"the run ended {state}: {cluster.task_states(DAG_ID, run_id)}\n{cluster.describe()}"
                )
            summary = cluster.xcom(DAG_ID, run_id, "collect_results")
    results = Path(str(summary["destination"]).removeprefix("file://").removeprefix("file:"))
    probes = [json.loads(line) for line in probe.open()]
    return split(n, triggered, results.stat().st_mtime, clock, calls, busy_seconds(served), probes, summary)


def split(
    n: int,
    triggered: float,
    written: float,
    clock: EmulatorClock,
    calls: Counter[str],
    busy: float,
    probes: list[dict[str, Any]],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """The run's wall time split into its parts, from the probes' and the emulator's clocks."""

    def of(task: str, method: str) -> list[dict[str, Any]]:
        return [p for p in probes if p["task"] == task and p["method"] == method]

    (build,) = of("build_requests", "execute")
    submits, resumed = of("submit_batch", "execute"), of("submit_batch", "execute_complete")
    (collect,) = of("collect_results", "execute")
    (deliver,) = of("collect_results", "deliver")
    notice = [p["start"] - clock.answered[p["batch_id"]] for p in resumed if p["batch_id"] in clock.answered]
    wall = written - triggered
    parts = {
        "build_s": build["end"] - build["start"],
        "submit_s": max(p["end"] for p in submits) - min(p["start"] for p in submits),
        "emulator_s": busy,
        "emulator_scan_s": clock.seconds("scan"),
        "emulator_answers_s": clock.seconds("answers"),
        "notice_latency_median_s": statistics.median(notice) if notice else None,
        "notice_latency_max_s": max(notice) if notice else None,
        "reconcile_s": deliver["start"] - collect["start"],
        "delivery_s": deliver["end"] - deliver["start"],
        "trigger_to_build_s": build["start"] - triggered,
        "last_resume_to_results_s": collect["start"] - max(p["end"] for p in resumed),
    }
    rss = {
        f"{kind}_peak_rss_mb": max(p["peak_rss_mb"] for p in probes if p["task"] == task)
        for task, kind in TASKS.items()
    }
    rss["reconcile_workers_peak_rss_mb"] = deliver["children_peak_rss_mb"]
    return {
        "records": n,
        "rows": summary["requests"],
        "shards": len({p["map_index"] for p in submits}),
        "task_tries": len(submits) + 2,  # build, results and every submit try: shards + 2 without retries
        "wall_s": wall,
        "overhead_s": wall - busy,
        **parts,
        **rss,
        "api_calls": sum(calls.values()),
        "api_calls_by_route": dict(sorted(calls.items())),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_200_000)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="openai-batch-bench-e2e-"))
    figures = run(args.records, work, args.timeout)
    print(json.dumps(figures, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
