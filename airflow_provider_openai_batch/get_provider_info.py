"""Provider registration read by Airflow through the ``apache_airflow_provider`` entry point.

Connection form fields are declared here (``conn-fields`` / ``ui-field-behaviour``), the Airflow 3
way: the UI reads them without importing the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_openai_batch import __version__

PACKAGE = "airflow_provider_openai_batch"
INTEGRATION = "OpenAI Batch"


def _string(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


CONN_FIELDS: dict[str, Any] = {
    "organization": _string("Organization", "OpenAI organization id (org-…), if the key belongs to several."),
    "project": _string("Project", "OpenAI project id (proj_…) to bill the batches to."),
    "timeout": {
        "label": "Timeout (s)",
        "description": "HTTP timeout per API call, in seconds (the openai client's default: 600).",
        "schema": {"type": ["number", "null"], "minimum": 1},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of 408/409/429/5xx and connection errors by the openai client (default 2).",
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    "api_version": _string("Azure API version", "Azure OpenAI only: e.g. 2024-10-21. Setting it selects Azure."),
    "azure_endpoint": _string("Azure endpoint", "Azure OpenAI only: https://<resource>.openai.azure.com"),
    "azure_deployment": _string("Azure deployment", "Azure OpenAI only: the deployment name, if not per request."),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"password": "API key", "host": "Base URL"},
    "placeholders": {
        "host": "https://api.openai.com/v1 (leave empty for OpenAI)",
        "password": "sk-…",
        "organization": "org-…",
        "project": "proj_…",
        "timeout": "600",
        "max_retries": "2",
    },
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-openai-batch",
        "name": "OpenAI Batch",
        "description": "Run millions of records through the OpenAI Batch API at half price, from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://platform.openai.com/docs/guides/batch",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION, "python-modules": [f"{PACKAGE}.hooks.openai_batch"]}],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    f"{PACKAGE}.operators.build",
                    f"{PACKAGE}.operators.validate",
                    f"{PACKAGE}.operators.submit",
                    f"{PACKAGE}.operators.results",
                ],
            }
        ],
        "sensors": [{"integration-name": INTEGRATION, "python-modules": [f"{PACKAGE}.sensors.batch"]}],
        "triggers": [{"integration-name": INTEGRATION, "python-modules": [f"{PACKAGE}.triggers.batch"]}],
        "extra-links": [f"{PACKAGE}.links.batch.OpenAIBatchLink"],
        "task-decorators": [
            {"name": "openai_batch", "class-name": f"{PACKAGE}.decorators.openai_batch.openai_batch_task"}
        ],
        "plugins": [{"name": "openai_batch", "plugin-class": f"{PACKAGE}.plugins.openai_batches.OpenAIBatchesPlugin"}],
        "connection-types": [
            {
                "connection-type": "openai_batch",
                "hook-class-name": f"{PACKAGE}.hooks.openai_batch.OpenAIBatchHook",
                "hook-name": "OpenAI Batch",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
