"""A CeleryExecutor deployment on one machine, laid out as it would be across machines.

``postgres_database`` gives a test a metadata database of its own on the PostgreSQL server (a copy
of a template migrated once per Airflow version: ``CREATE DATABASE … TEMPLATE`` takes a second,
``airflow db migrate`` half a minute). ``CeleryWorker`` is ``airflow celery worker`` as another
machine runs it: its own home, temporary directory, log-server port and host name; it shares only
what a real worker shares — the broker, the api-server's URL, the connections and the DAG files::

    with postgres_database(POSTGRES_URL) as url, AirflowCluster(home, dags_folder=..., executor="CeleryExecutor",
            database_url=url, env=celery_settings(url, queue)) as cluster:
        workers = [CeleryWorker(cluster, f"worker-{n}", tmp / f"worker-{n}", queue).start() for n in (1, 2)]
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib.metadata import version
from pathlib import Path

import psutil
import psycopg
from sqlalchemy.engine import make_url

from tests.integration.airflow_cluster import AirflowCluster, ClusterError, _tail, free_port, wait_until

REDIS_URL = os.environ.get("OPENAI_BATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# The worker's host name, as Airflow records it on each task try: the two workers share a machine.
_HOSTNAME_MODULE = "import os\n\n\ndef hostname():\n    return os.environ['OPENAI_BATCH_TEST_WORKER']\n"


def _sqlalchemy_url(admin_url: str, database: str) -> str:
    url = make_url(admin_url).set(drivername="postgresql+psycopg2", database=database)
    return url.render_as_string(hide_password=False)


def _admin(admin_url: str) -> psycopg.Connection:
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)


def _exists(admin_url: str, database: str) -> bool:
    with _admin(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None


def migrated_template(admin_url: str) -> str:
    """The name of a database at the installed Airflow's schema, migrated once per version and kept."""
    template = "openai_batch_airflow_" + version("apache-airflow-core").replace(".", "_")
    if _exists(admin_url, template):
        return template
    building = f"{template}_{secrets.token_hex(4)}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{building}"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _sqlalchemy_url(admin_url, building)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    command = [sys.executable, "-m", "airflow", "db", "migrate"]
    migrate = subprocess.run(command, env=env, capture_output=True, text=True)
    with _admin(admin_url) as conn:
        if migrate.returncode:
            conn.execute(f'DROP DATABASE "{building}" WITH (FORCE)')
            raise ClusterError(f"airflow db migrate on PostgreSQL failed:\n{migrate.stderr[-3000:]}")
        try:  # a concurrent session may have finished first: keep theirs
            conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{template}"')
        except psycopg.errors.DuplicateDatabase:
            conn.execute(f'DROP DATABASE "{building}" WITH (FORCE)')
    return template


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A migrated metadata database of the test's own (its SQLAlchemy URL), dropped afterwards."""
    template = migrated_template(admin_url)
    name = f"openai_batch_test_{secrets.token_hex(6)}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _sqlalchemy_url(admin_url, name)
    finally:
        with _admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def celery_settings(database_url: str, queue: str, broker_url: str = REDIS_URL) -> dict[str, str]:
    """What the scheduler and the workers agree on: the broker, the result backend, the queue."""
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
        # A queue of the test's own: other sessions' workers on the same Redis never take its tasks.
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # A lost worker's task is noticed (no heartbeat) and retried within half a minute.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


class CeleryWorker:
    """
    ``airflow celery worker`` under ``root``: its home (task logs), its TMPDIR, its own host name.

    :param cluster: the deployment whose environment (broker, connections, DAG folder) it shares.
    :param name: the host name Airflow records for the tasks it runs.
    :param root: created; nothing else is written on local disk by this worker.
    :param queue: the Celery queue it serves.
    """

    def __init__(self, cluster: AirflowCluster, name: str, root: Path, queue: str) -> None:
        self.cluster = cluster
        self.name = name
        self.root = Path(root)
        self.queue = queue
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    def _env(self) -> dict[str, str]:
        site = self.root / "site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "openai_batch_worker_identity.py").write_text(_HOSTNAME_MODULE)
        (self.root / "tmp").mkdir(exist_ok=True)
        return {
            **self.cluster.env,
            "AIRFLOW_HOME": str(self.root / "home"),
            "HOME": str(self.root),
            "TMPDIR": str(self.root / "tmp"),
            "PYTHONPATH": str(site),
            "OPENAI_BATCH_TEST_WORKER": self.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "openai_batch_worker_identity.hostname",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

    def start(self, timeout: float = 90) -> CeleryWorker:
        env = self._env()
        command = [sys.executable, "-m", "airflow", "celery", "worker", "--queues", self.queue]
        command += ["--celery-hostname", f"{self.name}@%h", "--without-mingle", "--without-gossip"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ClusterError(f"worker {self.name} exited with {self.process.returncode}:\n{_tail(self.log)}")
            return f"{self.name}@" in self.log.read_text(errors="replace") and " ready." in self.log.read_text(
                errors="replace"
            )

        wait_until(ready, timeout, f"Celery worker {self.name}")
        return self

    def kill(self) -> None:
        """SIGKILL the worker and every process under it, at once: a machine lost mid-task."""
        if self.process is None:
            return
        try:
            tree = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for process in tree:
            with suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None
