"""Two emulators seeded with batches as Airflow tags them, reached through Airflow connections.

``fast`` finishes every batch at once; ``slow`` keeps them in progress for an hour, so the page
shows both finished and running batches. ``dead`` is a connection to a port nobody listens on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings
from airflow_provider_openai_batch.plugins.airflow_records import ShardKey
from airflow_provider_openai_batch.plugins.app import create_app
from airflow_provider_openai_batch.plugins.batch_listing import BatchLister
from airflow_provider_openai_batch.plugins.openai_batches import URL_PREFIX
from tests.unit.emulator.helpers import FAST, Batches, chat_line

SLOW = EmulatorSettings(validating_seconds=0, in_progress_seconds=3600)
XSS_DAG = "<script>alert('dag')</script>"
XSS_RUN = '"><img src=x onerror=alert(1)>'


def tags(dag_id: str, run_id: str, task_id: str, map_index: int, job: str = "job", shard: int = 0) -> dict[str, str]:
    """The metadata the submit operator puts on a batch."""
    return {
        "airflow_dag_id": dag_id,
        "airflow_task_id": task_id,
        "airflow_run_id": run_id,
        "airflow_map_index": str(map_index),
        "openai_batch_job": job,
        "openai_batch_shard": str(shard),
    }


def lines(prefix: str, count: int) -> list[dict]:
    system = "Answer positive, negative or neutral."
    return [chat_line(f"{prefix}-{i}", f"text {prefix} {i}", system=system, max_tokens=3) for i in range(count)]


@dataclass
class Seeded:
    """The ids of the batches created for the tests, by name."""

    ids: dict[str, str] = field(default_factory=dict)
    untagged: str = ""


@pytest.fixture(scope="session")
def fast_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(FAST) as server:
        yield server


@pytest.fixture(scope="session")
def slow_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(SLOW) as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def connections(fast_emulator, slow_emulator) -> Iterator[dict[str, str]]:
    urls = {
        "batches_fast": fast_emulator.base_url,
        "batches_slow": slow_emulator.base_url,
        "batches_dead": f"http://127.0.0.1:{_closed_port()}/v1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for conn_id, url in urls.items():
            conn = {"conn_type": "openai_batch", "host": url, "password": "sk-plugin-test"}
            patch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        yield urls


@pytest.fixture(scope="session")
def seeded(fast_emulator, slow_emulator) -> Seeded:
    fast = Batches(OpenAI(base_url=fast_emulator.base_url, api_key="sk-x", max_retries=0))
    slow = Batches(OpenAI(base_url=slow_emulator.base_url, api_key="sk-x", max_retries=0))
    seeded = Seeded()
    plan = [
        ("a0", fast, lines("a0", 4), tags("dag_a", "run_1", "submit", 0, shard=0)),
        ("a1", fast, lines("a1", 3), tags("dag_a", "run_1", "submit", 1, shard=1)),
        ("b", fast, lines("b", 2), tags("dag_b", "run_9", "submit", -1, job="job_b")),
        ("xss", fast, lines("x", 1), tags(XSS_DAG, XSS_RUN, "submit", -1)),
        ("slow", slow, lines("s", 5), tags("dag_c", "run_2", "submit", -1, job="job_c")),
    ]
    for name, target, body, metadata in plan:
        seeded.ids[name] = target.submit(body, metadata=metadata).id
    seeded.untagged = fast.submit(lines("u", 1)).id
    for name, target, *_ in plan:
        if target is fast:
            target.wait(seeded.ids[name])
    return seeded


class AllowDags:
    """An access policy letting the viewer read the given DAGs (``None``: all), and connections or not."""

    def __init__(self, dag_ids: set[str] | None = None, connections: bool = True) -> None:
        self.dag_ids = dag_ids
        self.connections = connections

    async def dag_filter(self, request):
        return lambda ids: set(ids) if self.dag_ids is None else set(ids) & self.dag_ids

    async def connections_visible(self, request):
        return self.connections


class RecordedAirflow:
    """Airflow's records as the app reads them: ``batch_id`` XComs and shard estimates."""

    def __init__(self, batch_ids: dict[tuple, list[str]] | None = None, estimates: dict[ShardKey, float] | None = None):
        self._batch_ids = batch_ids or {}
        self._estimates = estimates or {}
        self.runs_asked: list[set] = []

    def batch_ids(self, dag_id, run_id, task_id, map_index):
        return self._batch_ids.get((dag_id, run_id, task_id, map_index), [])

    def shard_estimates(self, runs):
        self.runs_asked.append(set(runs))
        return {key: cost for key, cost in self._estimates.items()}


def make_client(
    conn_ids: list[str],
    access: AllowDags | None = None,
    records: RecordedAirflow | None = None,
    root_path: str = "",
) -> TestClient:
    """A client of the plugin app; with ``root_path``, of the app mounted as Airflow mounts it, behind that path."""
    app = create_app(
        lister=BatchLister(),
        records=records or RecordedAirflow(),  # type: ignore[arg-type]
        access=access or AllowDags(),
        conn_ids=lambda: conn_ids,
    )
    if root_path:
        server = FastAPI()
        server.mount(URL_PREFIX, app)
        return TestClient(server, raise_server_exceptions=False, root_path=root_path)
    return TestClient(app, raise_server_exceptions=False)
