"""The provider is found by Airflow and its connection form reaches the UI's hook metadata."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_openai_batch.version_compat import AIRFLOW_V_3_1_PLUS


def test_airflow_providers_list_shows_the_provider(airflow_db):
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list"], capture_output=True, text=True, check=True
    )
    assert "airflow-provider-openai-batch" in result.stdout


@pytest.fixture(scope="module")
def api_client(airflow_db):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app()) as client:
        yield client


@pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS,
    reason="Airflow 3.0 reads no conn-fields / ui-field-behaviour from provider info: its connection form "
    "shows the standard fields, and the options go in Extra as JSON (README: compatibility)",
)
def test_connection_form_fields_show_in_hook_meta(api_client):
    response = api_client.get("/ui/connections/hook_meta")
    assert response.status_code == 200
    (meta,) = [m for m in response.json() if m["connection_type"] == "openai_batch"]
    assert meta["hook_name"] == "OpenAI Batch"
    assert meta["standard_fields"]["password"]["title"] == "API key"
    assert meta["standard_fields"]["host"]["title"] == "Base URL"
    assert meta["standard_fields"]["login"]["hidden"] is True
    assert set(meta["extra_fields"]) == {
        "organization",
        "project",
        "timeout",
        "max_retries",
        "api_version",
        "azure_endpoint",
        "azure_deployment",
    }
    assert meta["extra_fields"]["max_retries"]["schema"]["type"] == ["integer", "null"]
