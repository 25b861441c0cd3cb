"""The Airflow plugin: mounts the batches app on the api-server and adds it to the UI.

Two external views open the app inside Airflow's UI: a "OpenAI Batches" entry in the Browse menu,
and an "OpenAI batches" tab on every task instance (its ``{DAG_ID}``… placeholders are filled by
the UI). Registered through the provider info and the ``airflow.plugins`` entry point: Airflow
reads provider-info plugins only with ``[core] lazy_discover_providers = False``.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_openai_batch.plugins.app import URL_PREFIX, create_app

NAV_VIEW = {
    "name": "OpenAI Batches",
    "href": f"{URL_PREFIX}/",
    "destination": "nav",
    "category": "browse",
    "url_route": "openai-batches",
}
TASK_INSTANCE_VIEW = {
    "name": "OpenAI batches",
    "href": (
        f"{URL_PREFIX}/task-instance?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}"
    ),
    "destination": "task_instance",
    "url_route": "openai-batches-task-instance",
}


class OpenAIBatchesPlugin(AirflowPlugin):
    """The "OpenAI Batches" page and task-instance view."""

    name = "openai_batch"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "OpenAI Batches"}]
    external_views = [NAV_VIEW, TASK_INSTANCE_VIEW]
