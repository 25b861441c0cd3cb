"""Test-wide setup: an isolated AIRFLOW_HOME with a migrated database, and the emulator on loopback."""

from __future__ import annotations

import json
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
