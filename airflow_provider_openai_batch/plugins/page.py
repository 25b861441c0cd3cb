"""HTML for the batches page and the task-instance view, rendered by Jinja with autoescaping on.

Every value shown comes from batch metadata, run ids or query parameters, i.e. from users: the
templates never mark anything safe, and URLs are built here with each path segment quoted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import quote, urlencode

import jinja2

from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES, BatchStatus
from airflow_provider_openai_batch.plugins.batch_listing import BatchRow, Listing, iso_time

STATUSES: tuple[str, ...] = get_args(BatchStatus)


@dataclass(frozen=True)
class PageContext:
    """What the batches page was asked for, echoed back into its filter form."""

    conn_ids: Sequence[str]
    selected_conn_id: str | None
    dag_id: str | None
    status: str | None
    days: int
    limit: int


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("airflow_provider_openai_batch.plugins", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, count=count, moment=moment)
    env.globals.update(task_instance_url=task_instance_url, status_class=status_class)
    return env


def render_batches_page(listing: Listing, page: PageContext, ui_root: str = "") -> str:
    """The page; ``ui_root`` is the Airflow UI's path prefix, for links into it."""
    return (
        _environment()
        .get_template("batches.html")
        .render(
            ui_root=ui_root,
            listing=listing,
            groups=listing.groups(),
            page=page,
            statuses=STATUSES,
            clear_url="?" + urlencode({"conn_id": page.selected_conn_id} if page.selected_conn_id else {}),
        )
    )


def render_task_instance(
    rows: Sequence[BatchRow],
    listing: Listing,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    ui_root: str = "",
) -> str:
    return (
        _environment()
        .get_template("task_instance.html")
        .render(
            ui_root=ui_root,
            rows=rows,
            listing=listing,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            ti_url=ui_root + task_instance_url(dag_id, run_id, task_id, map_index),
        )
    )


def task_instance_url(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The Airflow UI's page of a task instance (mapped ones under ``/mapped/<index>``)."""
    parts = ("dags", dag_id, "runs", run_id, "tasks", task_id)
    path = "/" + "/".join(quote(str(part), safe="") for part in parts)
    return f"{path}/mapped/{map_index}" if map_index >= 0 else path


def status_class(status: str) -> str:
    if status == "completed":
        return "ok"
    if status in ("failed", "expired", "cancelled", "cancelling"):
        return "bad"
    return "running" if status not in TERMINAL_STATUSES else "other"


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.2f}" if value >= 100 else f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"


def moment(epoch: float | None) -> str:
    """A UTC time for a table cell (the column header says UTC)."""
    shown = iso_time(epoch)
    return "—" if shown is None else shown.removesuffix(" UTC")


def count(value: Any) -> str:
    return "—" if value is None else f"{value:,}"
