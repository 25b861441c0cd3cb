"""What Airflow itself recorded about batches: the ``batch_id`` XComs and the build step's estimates.

The OpenAI listing only reaches back a few days and knows nothing of what a batch was expected to
cost; Airflow's metadata database keeps both: the submit operator pushes ``batch_id`` the moment
a batch exists, and the build operator's shard list (its return value) carries each shard's
pre-submit cost estimate. Read in the api-server with a short-lived session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

BUILD_OPERATORS = frozenset({"OpenAIBatchBuildOperator"})
ShardKey = tuple[str, str]  # (job_id, shard index as text, as in the batch metadata)


class AirflowRecords:
    """Reads XComs from Airflow's metadata database (only inside Airflow: the api-server)."""

    def batch_ids(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[str]:
        """The ``batch_id`` XCom the submit operator pushed for one task instance."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            query = XComModel.get_many(
                run_id=run_id, key="batch_id", dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            )
            values = [XComModel.deserialize_value(row) for row in session.scalars(query)]
        return [v for v in values if isinstance(v, str) and v]

    def shard_estimates(self, runs: Iterable[tuple[str, str]]) -> dict[ShardKey, float]:
        """Pre-submit cost estimates of the shards built in these (dag_id, run_id) runs."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        estimates: dict[ShardKey, float] = {}
        with create_session() as session:
            for dag_id, run_id in set(runs):
                build_tasks = session.scalars(
                    select(TaskInstance.task_id).where(
                        TaskInstance.dag_id == dag_id,
                        TaskInstance.run_id == run_id,
                        TaskInstance.operator.in_(BUILD_OPERATORS),
                    )
                ).all()
                if not build_tasks:
                    continue
                # Every map index: a build task mapped over models returns one shard list each.
                query = XComModel.get_many(run_id=run_id, key="return_value", dag_ids=dag_id, task_ids=build_tasks)
                for row in session.scalars(query):
                    estimates.update(estimates_from_shards(XComModel.deserialize_value(row)))
        return estimates


def estimates_from_shards(shards: Any) -> dict[ShardKey, float]:
    """``{(job_id, index): cost}`` from a build task's shard list; anything else gives nothing."""
    found: dict[ShardKey, float] = {}
    if not isinstance(shards, list):
        return found
    for shard in shards:
        if not isinstance(shard, Mapping) or "job_id" not in shard or "index" not in shard:
            continue
        cost = shard_estimate(shard)
        if cost is not None:
            found[(str(shard["job_id"]), str(shard["index"]))] = cost
    return found


def shard_estimate(shard: Mapping[str, Any]) -> float | None:
    """A shard's estimated cost: the build step writes it as the shard's ``cost_usd`` (a ceiling)."""
    for value in (shard.get("cost_usd"), shard.get("estimated_cost_usd"), _nested(shard.get("estimate"), "cost_usd")):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _nested(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None
