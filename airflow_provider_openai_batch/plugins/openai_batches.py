"""The Airflow plugin: mounts the batches app on the api-server and adds it to the UI.

Two external views open the app inside Airflow's UI: a "OpenAI Batches" entry in the Browse menu,
and an "OpenAI batches" tab on every task instance (its ``{DAG_ID}``… placeholders are filled by
the UI). Registered through the provider info and the ``airflow.plugins`` entry point: Airflow
reads provider-info plugins only with ``[core] lazy_discover_providers = False``.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import AirflowPlugin

URL_PREFIX = "/openai-batches"  # where the app is mounted on the api-server

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


class BatchesApp:
    """
    The page's ASGI app, built on its first request.

    Every task process loads the plugins (for their macros), so building the FastAPI app here
    would import FastAPI, the page and the openai client — ~25 MB — into every task of every
    DAG; only the api-server ever serves the page.
    """

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            from airflow_provider_openai_batch.plugins.app import create_app

            self.app = create_app()
        await self.app(scope, receive, send)


class OpenAIBatchesPlugin(AirflowPlugin):
    """The "OpenAI Batches" page and task-instance view."""

    name = "openai_batch"
    fastapi_apps = [{"app": BatchesApp(), "url_prefix": URL_PREFIX, "name": "OpenAI Batches"}]
    external_views = [NAV_VIEW, TASK_INSTANCE_VIEW]
