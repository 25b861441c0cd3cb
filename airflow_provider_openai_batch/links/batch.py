"""The "OpenAI batch" extra link: from a task instance to its batch's page on the OpenAI dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

DASHBOARD_URL = "https://platform.openai.com/batches/{batch_id}"


class OpenAIBatchLink(BaseOperatorLink):
    """Reads the ``batch_id`` XCom the submit operator pushes before it defers, so it shows while waiting."""

    name = "OpenAI batch"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        batch_id = XCom.get_value(ti_key=ti_key, key="batch_id")
        return DASHBOARD_URL.format(batch_id=batch_id) if batch_id else ""
