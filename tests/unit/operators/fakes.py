"""A small recording stand-in for the task instance in an operator's context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingTI:
    dag_id: str = "dag"
    task_id: str = "task"
    run_id: str = "manual__2026-01-01"
    map_index: int = -1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context(**ti_fields: Any) -> dict[str, Any]:
    return {"ti": RecordingTI(**ti_fields)}
