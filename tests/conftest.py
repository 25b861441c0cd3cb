"""Test-wide setup: an isolated AIRFLOW_HOME with a migrated database, and the emulator on loopback."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Airflow reads its configuration on first import: point it at a private home before that.
_OWN_HOME = not os.environ.get("OPENAI_BATCH_TEST_AIRFLOW_HOME")
_HOME = Path(os.environ.get("OPENAI_BATCH_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="openai-batch-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "example_dags")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_HOME:
        shutil.rmtree(_HOME, ignore_errors=True)


TEST_API_KEY = "sk-test-NEVER-LOG-THIS-0123456789"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the test metadata database once per session (``dag.test()`` needs its tables)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
    return _HOME


@pytest.fixture(scope="session")
def emulator() -> Iterator[object]:
    from airflow_provider_openai_batch.emulator import EmulatorServer, EmulatorSettings

    settings = EmulatorSettings(validating_seconds=0.0, in_progress_seconds=0.05, finalizing_seconds=0.0)
    with EmulatorServer(settings=settings) as server:
        yield server


@pytest.fixture(scope="session")
def openai_conn(emulator) -> Iterator[str]:
    """An ``openai_default`` connection pointing at the emulator, as Airflow reads it from the env."""
    conn = {"conn_type": "openai_batch", "host": emulator.base_url, "password": TEST_API_KEY}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
        yield "openai_default"


# -- S3 (moto's server on loopback) and PostgreSQL, for the result destinations --------------------

S3_CONN_ID = "openai_batch_test_s3"
POSTGRES_CONN_ID = "openai_batch_test_postgres"
POSTGRES_URL = os.environ.get("OPENAI_BATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class MotoS3:
    """moto's S3 server (a real HTTP server on 127.0.0.1): its Airflow AWS connection and a boto3 client."""

    def __init__(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.connection = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    s3 = MotoS3()
    yield s3
    s3.server.stop()


@pytest.fixture(scope="session")
def s3_bucket(moto_s3) -> Iterator[str]:
    """A bucket on moto's S3 server, reached through an Airflow connection.

    Returns the ``s3://<conn_id>@<bucket>`` prefix ObjectStoragePath understands.
    """
    moto_s3.bucket("results")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", json.dumps(moto_s3.connection))
        yield f"s3://{S3_CONN_ID}@results"


@pytest.fixture(scope="session")
def postgres_conn() -> Iterator[str]:
    """A connection to the PostgreSQL at OPENAI_BATCH_TEST_POSTGRES_URL; skipped when unreachable (failed on CI)."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as err:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL} (set OPENAI_BATCH_TEST_POSTGRES_URL): {err}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{POSTGRES_CONN_ID.upper()}", POSTGRES_URL)
        yield POSTGRES_CONN_ID
