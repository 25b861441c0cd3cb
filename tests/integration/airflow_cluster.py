"""Real Airflow components and the emulator as processes on loopback, for end-to-end tests.

``AirflowCluster`` runs api-server, scheduler, dag-processor and triggerer (LocalExecutor, SQLite)
in a private ``AIRFLOW_HOME``, each in its own process group, and talks to them through the REST
API v2 — never the CLI, which costs seconds per call. ``EmulatorProcess`` runs the OpenAI Batch
emulator in its own process, so it outlives any Airflow component a test restarts::

    with EmulatorProcess(in_progress_seconds=0.5) as emulator, AirflowCluster(
        tmp_path / "airflow", dags_folder=EXAMPLE_DAGS, connections={"openai_default": emulator.connection()}
    ) as cluster:
        cluster.wait_for_dag("openai_batch_quickstart")
        run_id = cluster.trigger("openai_batch_quickstart")
        assert cluster.wait_for_run("openai_batch_quickstart", run_id) == "success"
        cluster.api_url  # e.g. for a browser test of the UI

Nothing here is a pytest fixture: wrap it in one at the scope you need.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
REPO = Path(__file__).resolve().parents[2]
PACKAGE = "airflow_provider_openai_batch"
RUN_END_STATES = frozenset({"success", "failed"})

T = TypeVar("T")


class ClusterError(RuntimeError):
    """A component did not come up or a wait ran out; the message carries the tail of its log."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_range() -> range:
    """``OPENAI_BATCH_TEST_PORTS`` (``low-high``, inclusive) if set, else 12,000 ports below the ephemeral range."""
    chosen = os.environ.get("OPENAI_BATCH_TEST_PORTS", "")
    if chosen:
        try:
            low, high = (int(part) for part in chosen.split("-"))
        except ValueError:
            raise ClusterError(f"OPENAI_BATCH_TEST_PORTS={chosen!r}: expected LOW-HIGH, e.g. 20000-20999") from None
        return range(low, high + 1)
    low, _ = _ephemeral_range()
    return range(max(1024, low - 12000), low)


def free_port() -> int:
    """
    A loopback port that is free now, from ``OPENAI_BATCH_TEST_PORTS`` or below the ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: between closing the probe socket and the server
    binding it, any outgoing connection on the machine may take it as its source port (seen as
    "address already in use" in CI). Ports below the ephemeral range are never handed out that way.
    """
    candidates = list(_port_range())
    random.SystemRandom().shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ClusterError(f"no free loopback port in {_port_range()}")


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """Call ``check`` until it returns something truthy; raise ``ClusterError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def migrated_database() -> Path:
    """
    An empty SQLite metadata database at the installed Airflow's schema, migrated once and reused.

    ``airflow db migrate`` takes ~20 s here; the schema depends only on the Airflow version, so a
    template keyed by it is copied into each cluster's home instead.
    """
    from importlib.metadata import version

    template = Path(tempfile.gettempdir()) / f"openai-batch-airflow-{version('apache-airflow-core')}.db"
    if template.exists():
        return template
    with tempfile.TemporaryDirectory(prefix="openai-batch-migrate-") as home:
        env = _clean_env({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], env=env, capture_output=True, text=True
        )
        if migrate.returncode:
            raise ClusterError(f"airflow db migrate failed:\n{migrate.stderr[-3000:]}")
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(Path(home) / "airflow.db", partial)
        partial.replace(template)  # atomic: a concurrent session sees the old state or the whole file
    return template


def installed_package(env: Mapping[str, str], cwd: Path) -> Path:
    """
    Where the components import the provider from: the installed wheel, file for file the tree's code.

    ``make test`` builds the wheel and installs it (not editable), as a user would; pytest imports
    the tree. A file the wheel lacks, an editable install or a copy older than the tree fails here.
    """
    code = f"import os, {PACKAGE} as p; print(os.path.dirname(os.path.realpath(p.__file__)))"
    probe = subprocess.run([sys.executable, "-c", code], env=dict(env), cwd=cwd, capture_output=True, text=True)
    if probe.returncode:
        raise ClusterError(f"the components cannot import {PACKAGE}:\n{probe.stderr[-2000:]}")
    installed = Path(probe.stdout.strip())
    fix = "run `make install-wheel` (or `make install-wheel-lowest` for .venv-lowest); make test does"
    if installed == REPO / PACKAGE or "site-packages" not in installed.parts:
        raise ClusterError(f"the components import {PACKAGE} from {installed}, not an installed wheel: {fix}")
    for source in sorted((REPO / PACKAGE).rglob("*")):
        if source.is_dir() or "__pycache__" in source.parts:
            continue
        copy = installed / source.relative_to(REPO / PACKAGE)
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            state = "differs from" if copy.is_file() else "is missing from"
            raise ClusterError(f"{copy.relative_to(installed.parent)} {state} the installed wheel: {fix}")
    return installed


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its Airflow settings (the test session's home), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(extra)
    return env


def _stop_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group (a component forks workers), then SIGKILL what is left."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _warnings(path: Path, lines: int = 30) -> str:
    """The latest warning and error lines of a log: what a stall left behind, which the tail may have scrolled past."""
    if not path.exists():
        return "(no log)"
    found = [line for line in path.read_text(errors="replace").splitlines() if _LOUD.search(line)]
    return "\n".join(found[-lines:]) or "(none)"


_LOUD = re.compile(r"\b(WARNING|ERROR|CRITICAL|warning|error|critical)\b")


class EmulatorProcess:
    """The emulator as a separate process on a free loopback port; knobs as keyword arguments."""

    def __init__(self, **knobs: Any) -> None:
        self.knobs = knobs
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def start(self) -> EmulatorProcess:
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in self.knobs.items()]
        command = [sys.executable, "-m", "airflow_provider_openai_batch.emulator", "--port", "0", *flags]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        assert self._process.stdout is not None
        first = self._process.stdout.readline()
        if "listening on " not in first:
            self.stop()
            raise ClusterError(f"emulator did not start: {first!r}")
        self.base_url = first.rsplit("listening on ", 1)[1].strip()
        return self

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)  # type: ignore[arg-type]
            self._process = None

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An ``openai_batch`` connection to this emulator (with its key, if it needs one), for ``AIRFLOW_CONN_*``."""
        key = self.knobs.get("api_key") or "sk-emulator"
        conn: dict[str, Any] = {"conn_type": "openai_batch", "host": self.base_url, "password": key}
        if extra:
            conn["extra"] = extra
        return conn

    def update_settings(self, **knobs: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.url}/_emulator/settings", json=knobs, headers=self._auth(), timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def batches(self) -> list[dict[str, Any]]:
        """Every batch the emulator holds, newest first, through the public list endpoint."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            response = httpx.get(f"{self.base_url}/batches", params=params, headers=self._auth(), timeout=10)
            response.raise_for_status()
            page = response.json()
            found.extend(page["data"])
            if not page.get("has_more"):
                return found
            params["after"] = page["last_id"]

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.knobs.get('api_key') or 'sk-emulator'}"}

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class AirflowCluster:
    """
    api-server, scheduler, dag-processor and triggerer in ``home``, reached at ``api_url``.

    :param home: the private ``AIRFLOW_HOME`` (created; holds airflow.db, logs/, <component>.log).
    :param dags_folder: the DAG files to serve.
    :param parallelism: ``[core] parallelism`` — worker slots of the LocalExecutor.
    :param connections: connection id -> ``AIRFLOW_CONN_*`` JSON value.
    :param env: further environment for every component (``AIRFLOW__SECTION__KEY`` settings, DAG inputs).
    :param pools: pool name -> slots, created with ``include_deferred`` once the api-server is up.
    :param executor: ``[core] executor``; a CeleryExecutor's workers are started by the test
        (tests/integration/celery_workers.py).
    :param database_url: a SQLAlchemy URL of a migrated metadata database; a copy of a migrated
        SQLite file in ``home`` when not given.
    """

    def __init__(
        self,
        home: Path,
        *,
        dags_folder: Path,
        parallelism: int = 2,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        pools: Mapping[str, int] | None = None,
        executor: str = "LocalExecutor",
        database_url: str | None = None,
    ) -> None:
        self.home = Path(home)
        self.executor = executor
        self.database_url = database_url
        self.dags_folder = Path(dags_folder)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}"
        self.pools = dict(pools or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.env = _clean_env({**self._settings(parallelism), **_connection_env(connections or {}), **(env or {})})
        self.client = httpx.Client(base_url=f"{self.api_url}/api/v2", timeout=30)

    def _settings(self, parallelism: int) -> dict[str, str]:
        from cryptography.fernet import Fernet

        database = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url} if self.database_url else {}
        return {
            **database,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__WORKERS": "1",
            # Airflow 3.0 answers ?deserialize=true on XCom entries only with this set.
            "AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(32).hex(),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # Each cluster serves its task and trigger logs on its own ports (the defaults are fixed).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> AirflowCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self.package = installed_package(self.env, self.home)
        if not self.database_url:
            shutil.copyfile(migrated_database(), self.home / "airflow.db")
        try:
            for name in COMPONENTS:
                self.start_component(name)
            self.wait_healthy(timeout)
            for pool, slots in self.pools.items():
                self.create_pool(pool, slots)
        except BaseException:
            self.stop()
            raise
        return self

    def start_component(self, name: str) -> None:
        command = [sys.executable, "-m", "airflow", name]
        if name == "api-server":
            command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home
            )

    def stop_component(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            _stop_group(process)

    def restart_component(self, name: str) -> None:
        self.stop_component(name)
        self.start_component(name)

    def stop(self) -> None:
        for name in reversed(COMPONENTS):
            self.stop_component(name)
        self.client.close()

    def __enter__(self) -> AirflowCluster:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def log_path(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def describe(self, dump: bool = False) -> str:
        """
        The tail of every component's log and its latest warnings and errors, for a failure message.

        ``dump``: first ask the scheduler (SIGUSR2) to log its executors' state and every thread's
        stack, and add that: what a scheduler that stopped scheduling was doing.
        """
        stacks = ""
        scheduler = self.processes.get("scheduler")
        if dump and scheduler is not None and scheduler.poll() is None:
            log = self.log_path("scheduler")
            start = log.stat().st_size if log.exists() else 0
            scheduler.send_signal(signal.SIGUSR2)
            time.sleep(3)
            with log.open("rb") as handle:
                handle.seek(start)
                stacks = "\n--- scheduler: SIGUSR2 dump ---\n" + handle.read(20_000).decode(errors="replace")
        return stacks + "\n".join(
            f"--- {name} ---\n{_tail(self.log_path(name))}\n--- {name}: warnings and errors ---\n"
            f"{_warnings(self.log_path(name))}"
            for name in COMPONENTS
        )

    # -- health -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        try:
            response = self.client.get("/monitor/health")
        except httpx.HTTPError:
            return {}
        return response.json() if response.status_code == 200 else {}

    def wait_healthy(self, timeout: float = 90, components: Iterable[str] = COMPONENTS) -> None:
        keys = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
        wanted = [keys[name] for name in components if name in keys]

        def healthy() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterError(f"{name} exited with {process.returncode}:\n{_tail(self.log_path(name))}")
            report = self.health()
            return bool(report) and all(report.get(key, {}).get("status") == "healthy" for key in wanted)

        try:
            wait_until(healthy, timeout, "a healthy Airflow")
        except ClusterError as err:
            raise ClusterError(f"{err}\n{self.describe()}") from None

    # -- REST API v2 ------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ClusterError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def create_pool(self, name: str, slots: int, include_deferred: bool = True) -> None:
        body = {"name": name, "slots": slots, "include_deferred": include_deferred}
        self.api("POST", "/pools", json=body)

    def wait_for_dag(self, dag_id: str, timeout: float = 60) -> None:
        def parsed() -> bool:
            return self.client.get(f"/dags/{dag_id}").status_code == 200

        try:
            wait_until(parsed, timeout, f"DAG {dag_id} to be parsed")
        except ClusterError as err:
            raise ClusterError(f"{err}\n{_tail(self.log_path('dag-processor'))}") from None

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120) -> str:
        """Wait until the run ends; returns ``success`` or ``failed``."""

        def ended() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in RUN_END_STATES else None

        try:
            return str(wait_until(ended, timeout, f"run {run_id} of {dag_id} to end"))
        except ClusterError as err:
            states = self.task_states(dag_id, run_id)
            raise ClusterError(f"{err}; task states: {states}\n{self.describe()}") from None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        page = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return list(page["task_instances"])

    def task_states(self, dag_id: str, run_id: str, task_id: str | None = None) -> dict[tuple[str, int], str | None]:
        """``{(task_id, map_index): state}`` of a run, optionally of one task only."""
        return {
            (ti["task_id"], ti["map_index"]): ti["state"]
            for ti in self.task_instances(dag_id, run_id)
            if task_id is None or ti["task_id"] == task_id
        }

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        result: dict[str, Any] = self.api("GET", path if map_index < 0 else f"{path}/{map_index}")
        return result

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, map_index: int, state: str) -> None:
        """What a user does with "Mark as failed/success" in the UI."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        self.api("PATCH", path, json={"new_state": state})

    def clear(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> None:
        """What a user does with "Clear" on a failed task instance (and what failed downstream of it)."""
        task = [task_id, map_index] if map_index >= 0 else task_id
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": [task], "include_downstream": True}
        self.api("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api("GET", path, params={"map_index": map_index, "deserialize": True})["value"]

    def links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str | None]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        result: dict[str, str | None] = self.api("GET", path, params={"map_index": map_index})
        return result

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's log as text: the messages of its structured entries, one per line."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        page = self.api("GET", path, params={"map_index": map_index, "full_content": True})
        entries = page.get("content") or []
        return "\n".join(str(e.get("event", "")) if isinstance(e, dict) else str(e) for e in entries)

    def task_logs(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Iterator[str]:
        """The log of each try of a task instance, first try first."""
        tries = self.task_instance(dag_id, run_id, task_id, map_index)["try_number"]
        for number in range(1, tries + 1):
            try:
                yield self.task_log(dag_id, run_id, task_id, number, map_index)
            except ClusterError as err:
                # A try the scheduler reset before it ran (seen on a loaded machine) has no record.
                if "HTTP 404" not in str(err):
                    raise
                yield f"(try {number} has no record: it never ran)"


def _connection_env(connections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(dict(value)) for conn_id, value in connections.items()}
