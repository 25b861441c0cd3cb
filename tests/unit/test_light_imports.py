"""Importing the operators, the decorator, the sensor and the trigger loads neither Arrow nor a tokenizer.

The DAG processor imports every DAG file, and so these modules, over and over; reconciliation,
Parquet and token counting are loaded by the task that runs them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pyarrow", "tiktoken")


@pytest.mark.parametrize(
    "module",
    [
        "airflow_provider_openai_batch.operators.build",
        "airflow_provider_openai_batch.operators.submit",
        "airflow_provider_openai_batch.operators.results",
        "airflow_provider_openai_batch.operators.validate",
        "airflow_provider_openai_batch.decorators.openai_batch",
        "airflow_provider_openai_batch.sensors.batch",
        "airflow_provider_openai_batch.triggers.batch",
    ],
)
def test_importing_loads_no_arrow_and_no_tokenizer(module):
    code = f"import sys, {module}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_loading_the_plugin_as_every_task_does_imports_neither_the_page_nor_the_openai_client():
    # Airflow 3.0's plugins manager imports FastAPI itself: count only what the plugin adds to it.
    module = "airflow_provider_openai_batch.plugins.openai_batches"
    page = "airflow_provider_openai_batch.plugins.app"
    code = (
        "import sys\n"
        "from airflow.providers.common.compat.sdk import AirflowPlugin\n"
        f"before = set(sys.modules)\nimport {module}\n"
        f"print(sorted(m for m in ('fastapi', 'openai', '{page}') if m in set(sys.modules) - before))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
