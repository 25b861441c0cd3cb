"""The "OpenAI batch" extra link: from a task instance to its batch's page on the OpenAI dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from airflow_provider_openai_batch.hooks.openai_batch import DASHBOARD_URL

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# Pushed by the task with the batch id (operators/batch_lifecycle.py): the dashboard page, or ""
# when the batch lives on Azure, a proxy or an emulator, whose batches OpenAI's dashboard never saw.
BATCH_LINK_XCOM = "batch_link"


class OpenAIBatchLink(BaseOperatorLink):
    """Reads what the task pushed before it deferred, so the link shows while the batch runs."""

    name = "OpenAI batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        link = XCom.get_value(ti_key=ti_key, key=BATCH_LINK_XCOM)
        if isinstance(link, str):
            return link
        # A task that ran before the link was pushed: only its batch id is known.
        batch_id = XCom.get_value(ti_key=ti_key, key="batch_id")
        return DASHBOARD_URL.format(batch_id=batch_id) if batch_id else ""
