"""Submit and wait on real Airflow components: api-server, scheduler, dag-processor, triggerer.

One module-scoped scenario drives the DAGs in tests/integration/dags/openai_batch_e2e.py through
the REST API v2, with the emulator in its own process, and records what it saw; each test checks
one of those observations. LocalExecutor with ``parallelism=1``: one worker slot in all.

1. trigger ``openai_batch_e2e`` (3 shards, pool of 2 slots counting deferred tasks; the first tries
   of shards 0 and 1 are killed after creating their batch) and ``openai_batch_e2e_cancel``;
2. once two submits are deferred, run ``openai_batch_e2e_busy`` in the single worker slot;
3. mark the cancel run's deferred submit failed;
4. restart the triggerer while the batches are still in progress;
5. let the batches finish and wait for the run to succeed: its collect task reconciles the three
   shards in two worker processes forked from the task's own process.

Before Airflow 3.1 a task process killed by a signal fails without its retries (apache/airflow#55753):
there the test clears the two killed tries, as a user would, and the new tries must re-attach. Before
3.3 there is no task state store (both re-attach by idempotency key) and no ``BaseTrigger.on_kill``
(marking a deferred task failed cannot cancel its batch), as the README's compatibility table says.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_3_PLUS
from tests.conftest import TEST_API_KEY
from tests.integration.airflow_cluster import AirflowCluster, ClusterError, EmulatorProcess, wait_until

DAGS = Path(__file__).parent / "dags"
MAIN, CANCEL, BUSY = "openai_batch_e2e", "openai_batch_e2e_cancel", "openai_batch_e2e_busy"
SUBMIT = "submit_batch"
POOL, POOL_SLOTS = "openai_batches", 2
SHARDS = 3
KILLED = (0, 1)  # the map indexes whose first try the DAG kills (openai_batch_e2e.py)

# Starting four Airflow components and playing the scenario takes 2-4 minutes on two busy cores.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Scenario:
    """What the scenario observed, for the tests to check."""

    main_run: str = ""
    cleared: set[int] = field(default_factory=set)
    cancel_run: str = ""
    snapshots: list[dict[int, str | None]] = field(default_factory=list)
    deferred_link: dict[str, Any] = field(default_factory=dict)
    busy_while_deferred: dict[int, str | None] = field(default_factory=dict)
    cancelled_ti_state: str | None = None
    cancelled_batch_status: str | None = None
    triggerer_jobs_before: set[int] = field(default_factory=set)
    triggerer_jobs_after: set[int] = field(default_factory=set)
    main_state: str = ""
    final_states: dict[tuple[str, int], str | None] = field(default_factory=dict)
    results: list[list[dict[str, Any]]] = field(default_factory=list)
    batches: list[dict[str, Any]] = field(default_factory=list)
    submit_logs: dict[int, list[str]] = field(default_factory=dict)
    log_text: str = ""
    timings: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, step: str) -> None:
        """Keep when each step ended: the test's own profile, printed by ``pytest -s``."""
        self.timings.append((step, time.monotonic()))
        print(f"[e2e] {step}: {self.timings[-1][1] - self.timings[0][1]:.1f}s", flush=True)


def submit_states(cluster: AirflowCluster, run_id: str) -> dict[int, str | None]:
    return {index: state for (_, index), state in cluster.task_states(MAIN, run_id, SUBMIT).items() if index >= 0}


def deferred(states: dict[int, str | None]) -> list[int]:
    return sorted(index for index, state in states.items() if state == "deferred")


def batches_of(emulator: EmulatorProcess, dag_id: str) -> list[dict[str, Any]]:
    return [b for b in emulator.batches() if (b.get("metadata") or {}).get("airflow_dag_id") == dag_id]


def watch_main(cluster: AirflowCluster, scenario: Scenario, until, timeout: float, what: str):
    """Poll the main run's submit states, keeping every snapshot, until ``until(states)`` holds."""

    def check():
        states = submit_states(cluster, scenario.main_run)
        scenario.snapshots.append(states)
        if not AIRFLOW_V_3_1_PLUS:  # the killed tries failed without retry: clear them, as a user would
            for index in KILLED:
                if states.get(index) == "failed" and index not in scenario.cleared:
                    cluster.clear(MAIN, scenario.main_run, SUBMIT, index)
                    scenario.cleared.add(index)
        return until(states) and states

    return wait_until(check, timeout, what, interval=0.5)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Iterator[Scenario]:
    work = tmp_path_factory.mktemp("e2e-work")
    scenario = Scenario()
    scenario.mark("start")
    knobs: dict[str, Any] = {
        "validating_seconds": 0,
        "in_progress_seconds": 3600,
        "finalizing_seconds": 0,
        "api_key": TEST_API_KEY,
    }
    with EmulatorProcess(**knobs) as emulator:
        cluster = AirflowCluster(
            tmp_path_factory.mktemp("airflow-home"),
            dags_folder=DAGS,
            parallelism=1,
            connections={"openai_default": emulator.connection()},
            env={"OPENAI_BATCH_E2E_WORK_DIR": str(work), "OPENAI_BATCH_E2E_GATE": str(work / "gate")},
            pools={POOL: POOL_SLOTS},
        )
        with cluster:
            try:
                yield play(cluster, emulator, work, scenario)
            except ClusterError as err:
                raise AssertionError(f"{err}\n{cluster.describe()}") from None


def play(cluster: AirflowCluster, emulator: EmulatorProcess, work: Path, scenario: Scenario) -> Scenario:
    scenario.mark("cluster up")
    for dag_id in (MAIN, CANCEL, BUSY):
        cluster.wait_for_dag(dag_id)
    scenario.mark("dags parsed")
    scenario.main_run = cluster.trigger(MAIN)
    scenario.cancel_run = cluster.trigger(CANCEL, {"shard": write_shard(work / "cancel.jsonl", CANCEL)})

    # 1. Submits defer; the pool (2 slots, deferred included) holds the third back.
    states = watch_main(cluster, scenario, lambda s: len(deferred(s)) >= POOL_SLOTS, 120, "two deferred submits")
    scenario.mark("two submits deferred")
    scenario.deferred_link = cluster.links(MAIN, scenario.main_run, SUBMIT, deferred(states)[0])

    # 2. The single worker slot runs another task while the submits wait.
    busy_run = cluster.trigger(BUSY)
    wait_until(
        lambda: cluster.task_states(BUSY, busy_run).get(("hold_worker_slot", -1)) == "running",
        60,
        "the busy task to run",
    )
    scenario.mark("busy task running")
    scenario.busy_while_deferred = submit_states(cluster, scenario.main_run)

    # 3. A user marks a deferred submit failed: the trigger's on_kill cancels its batch.
    cancel_ti = (SUBMIT, -1)
    wait_until(lambda: cluster.task_states(CANCEL, scenario.cancel_run).get(cancel_ti) == "deferred", 60, "cancel run")
    cluster.set_task_state(CANCEL, scenario.cancel_run, SUBMIT, -1, "failed")
    if AIRFLOW_V_3_3_PLUS:  # before 3.3 nothing cancels it now (no BaseTrigger.on_kill)
        scenario.cancelled_batch_status = wait_for_cancel(emulator)["status"]
        scenario.mark("cancelled on mark failed")
    scenario.cancelled_ti_state = cluster.task_states(CANCEL, scenario.cancel_run)[cancel_ti]

    # 4. The triggerer restarts mid-wait; its triggers move to the new triggerer job.
    waiting = deferred(submit_states(cluster, scenario.main_run))
    scenario.triggerer_jobs_before = triggerer_jobs(cluster, scenario.main_run, waiting)
    cluster.restart_component("triggerer")
    scenario.triggerer_jobs_after = wait_until(
        lambda: (jobs := triggerer_jobs(cluster, scenario.main_run, waiting)) - scenario.triggerer_jobs_before and jobs,
        90,
        "the deferred submits to move to the new triggerer",
    )

    scenario.mark("triggerer restarted")
    # 5. Batches finish; the run completes.
    (work / "gate").touch()
    emulator.update_settings(in_progress_seconds=0)
    scenario.main_state = cluster.wait_for_run(MAIN, scenario.main_run, timeout=150)
    scenario.mark("run ended")
    scenario.final_states = cluster.task_states(MAIN, scenario.main_run)
    scenario.batches = batches_of(emulator, MAIN)
    scenario.submit_logs = {
        index: list(cluster.task_logs(MAIN, scenario.main_run, SUBMIT, index)) for index in range(SHARDS)
    }
    scenario.log_text = all_logs(cluster.home)
    scenario.results = [pq.read_table(path).to_pylist() for path in (work / "results").glob("*/results.parquet")]
    return scenario


def write_shard(path: Path, job_id: str, count: int = 5) -> dict[str, Any]:
    """A shard as the build task describes it, written by the test itself (one task run fewer)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body} for i in range(count)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return {
        "index": 0,
        "path": str(path),
        "requests": count,
        "bytes": len(data),
        "sha256": digest,
        "job_id": job_id,
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
    }


def wait_for_cancel(emulator: EmulatorProcess) -> dict[str, Any]:
    """The cancel run's batch once the trigger's on_kill has cancelled it."""
    cancelled = wait_until(
        lambda: [b for b in batches_of(emulator, CANCEL) if b["status"] in ("cancelling", "cancelled")],
        60,
        "the marked-failed task's batch to be cancelled",
    )
    return dict(cancelled[0])


def triggerer_jobs(cluster: AirflowCluster, run_id: str, indexes: list[int]) -> set[int]:
    jobs = set()
    for index in indexes:
        ti = cluster.task_instance(MAIN, run_id, SUBMIT, index)
        if ti["state"] == "deferred" and ti.get("triggerer_job"):
            jobs.add(ti["triggerer_job"]["id"])
    return jobs


def all_logs(home: Path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in home.rglob("*.log"))


def test_submit_tasks_wait_deferred_without_holding_a_worker_slot(scenario):
    # parallelism=1: the busy task could not run if a deferred submit held the slot.
    assert len(deferred(scenario.busy_while_deferred)) >= POOL_SLOTS, scenario.busy_while_deferred


def test_a_pool_with_include_deferred_caps_the_batches_in_flight(scenario):
    assert max(len(deferred(states)) for states in scenario.snapshots) <= POOL_SLOTS
    held_back = [s for s in scenario.snapshots if len(deferred(s)) == POOL_SLOTS and len(s) == SHARDS]
    assert any(state == "scheduled" for s in held_back for state in s.values()), scenario.snapshots[-5:]


def test_the_batch_link_is_empty_for_a_batch_not_on_openais_api(scenario):
    # The emulator's batches have no page on OpenAI's dashboard: the link is there, with no target.
    # (tests/unit/links/test_batch.py: a batch on api.openai.com gets its dashboard page.)
    assert "OpenAI batch" in scenario.deferred_link["extra_links"]
    assert not scenario.deferred_link["extra_links"]["OpenAI batch"]


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="BaseTrigger.on_kill is new in Airflow 3.3 (README)")
def test_marking_a_deferred_task_failed_cancels_its_batch(scenario):
    assert scenario.cancelled_ti_state == "failed"
    assert scenario.cancelled_batch_status in ("cancelling", "cancelled")


def test_a_triggerer_restart_mid_wait_does_not_break_the_run(scenario):
    assert scenario.triggerer_jobs_before
    assert scenario.triggerer_jobs_after.isdisjoint(scenario.triggerer_jobs_before)
    assert scenario.main_state == "success", scenario.final_states
    assert {b["status"] for b in scenario.batches} == {"completed"}


def test_killed_tasks_reattach_so_each_shard_has_exactly_one_batch(scenario):
    keys = [b["metadata"]["idempotency_key"] for b in scenario.batches]
    assert len(keys) == SHARDS and len(set(keys)) == SHARDS, keys
    recorded, listed = scenario.submit_logs[0], scenario.submit_logs[1]
    # Without the task state store (before 3.3) shard 0 is found by its idempotency key, like shard 1.
    how = "recorded in the task state" if AIRFLOW_V_3_3_PLUS else "created earlier for this shard"
    assert len(recorded) == 2 and how in recorded[1], recorded[-1][-4000:]
    assert len(listed) == 2 and "created earlier for this shard" in listed[1], listed[-1][-4000:]
    assert scenario.cleared == (set() if AIRFLOW_V_3_1_PLUS else set(KILLED))


def test_results_are_reconciled_in_worker_processes_forked_from_a_real_task(scenario):
    assert scenario.final_states[("collect_results", -1)] == "success", scenario.final_states
    (rows,) = scenario.results
    assert len(rows) == 30 and {row["status"] for row in rows} == {"succeeded"}
    assert sorted(row["custom_id"] for row in rows) == [f"r{i:03d}" for i in range(30)]
    assert {row["shard"] for row in rows} == {0, 1, 2}


def test_the_api_key_reaches_no_log(scenario):
    assert "Created batch" in scenario.log_text
    assert TEST_API_KEY not in scenario.log_text


def test_reading_the_mapped_submits_returns_logs_no_xcom_error(scenario):
    """Iterating Airflow's lazy XCom sequence asks for the item past the last; the worker logs the 404.

    Only that read names an ``offset``. (Airflow 3.0's task runner logs a 404 of its own when a
    cleared try looks up its earlier XComs at map_index -1, and the scenario clears two tries there;
    on 3.3 no log of the run has an "XCom not found" line at all.)
    """
    assert "Delivered 30 result rows" in scenario.log_text  # the collect task read all three returns
    lines = scenario.log_text.splitlines()
    assert [line for line in lines if "XCom not found" in line and "offset=" in line] == []
    if AIRFLOW_V_3_3_PLUS:
        assert [line for line in lines if "XCom not found" in line] == []
