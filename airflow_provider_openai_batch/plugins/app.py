"""The FastAPI app behind the "OpenAI Batches" page, mounted on Airflow's api-server by the plugin.

``create_app`` is a factory: it reads no configuration, and each request reads the connection
list then, so changing ``[openai_batch] ui_conn_ids`` needs no reload. Routes:

- ``GET /``                     the page: batches per DAG run, filtered by DAG, status, connection, days
- ``GET /task-instance``        one task instance's batches (``dag_id``, ``run_id``, ``task_id``, ``map_index``)
- ``GET /api/batches``          the page's data as JSON (same parameters, plus ``run_id``/``task_id``/``map_index``)
- ``GET /api/task-instance``    the task-instance view's data as JSON

Bad parameters and missing identities answer JSON errors naming the parameter and what it accepts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_openai_batch.plugins.access import AirflowDagAccess, DagAccess, DagIdFilter
from airflow_provider_openai_batch.plugins.airflow_records import AirflowRecords
from airflow_provider_openai_batch.plugins.batch_listing import (
    BatchFilter,
    BatchLister,
    BatchRow,
    Listing,
    SourceError,
    describe_error,
)
from airflow_provider_openai_batch.plugins.openai_batches import URL_PREFIX
from airflow_provider_openai_batch.plugins.page import (
    STATUSES,
    PageContext,
    render_batches_page,
    render_task_instance,
)

CONFIG_SECTION = "openai_batch"
CONFIG_CONN_IDS = "ui_conn_ids"
HIDDEN_ERRORS = "some batches could not be read; ask someone who may read connections for the details"
DEFAULT_CONN_IDS = "openai_default"
DEFAULT_DAYS, MAX_DAYS = 7, 90
DEFAULT_LIMIT, MAX_LIMIT = 200, 1000
DAY_SECONDS = 86_400


class QueryError(ValueError):
    """A query parameter the page cannot use; answered as a 400 JSON error with its context."""

    def __init__(self, param: str, value: str, message: str, allowed: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.param, self.value, self.message, self.allowed = param, value, message, allowed

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": "invalid_parameter", "param": self.param, "value": self.value}
        body["message"] = self.message
        if self.allowed is not None:
            body["allowed"] = list(self.allowed)
        return body


@dataclass(frozen=True)
class Query:
    """The parsed parameters of one request."""

    conn_ids: tuple[str, ...]
    configured: tuple[str, ...]
    selected_conn_id: str | None
    flt: BatchFilter
    days: int
    limit: int


def configured_conn_ids() -> list[str]:
    """The connections the page reads, from ``[openai_batch] ui_conn_ids`` (comma-separated)."""
    from airflow.configuration import conf

    raw = conf.get(CONFIG_SECTION, CONFIG_CONN_IDS, fallback=DEFAULT_CONN_IDS) or DEFAULT_CONN_IDS
    return [part.strip() for part in raw.split(",") if part.strip()]


def ui_root(request: Request) -> str:
    """The Airflow UI's root path: where this app is mounted, less its own prefix (Airflow may run under a sub-path)."""
    return str(request.scope.get("root_path", "")).removesuffix(URL_PREFIX)


def create_app(
    *,
    lister: BatchLister | None = None,
    records: AirflowRecords | None = None,
    access: DagAccess | None = None,
    conn_ids: Callable[[], Sequence[str]] = configured_conn_ids,
) -> FastAPI:
    """Build the app; every collaborator can be replaced (tests pass their own connection list)."""
    app = FastAPI(title="OpenAI Batches", docs_url=None, redoc_url=None, openapi_url=None)
    views = _Views(lister or BatchLister(), records or AirflowRecords(), access or AirflowDagAccess(), conn_ids)

    @app.exception_handler(QueryError)
    async def _bad_query(request: Request, err: QueryError) -> JSONResponse:
        return JSONResponse(err.to_dict(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        body = {"error": "not_authorized" if err.status_code in (401, 403) else "http_error", "message": err.detail}
        return JSONResponse({**body, "path": request.url.path}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        body = {"error": "internal_error", "message": describe_error(err), "path": request.url.path}
        return JSONResponse(body, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def batches_page(request: Request) -> HTMLResponse:
        query, listing = await views.listing(request)
        shown = query.configured if await views.access.connections_visible(request) else ()
        page = PageContext(shown, query.selected_conn_id, query.flt.dag_id, query.flt.status, query.days, query.limit)
        return HTMLResponse(render_batches_page(listing, page, ui_root(request)))

    @app.get("/api/batches")
    async def batches_json(request: Request) -> JSONResponse:
        query, listing = await views.listing(request)
        echo = _echo(query)
        if not await views.access.connections_visible(request):
            echo["conn_ids"] = []
        return JSONResponse({"query": echo, **listing.to_dict()})

    @app.get("/task-instance", response_class=HTMLResponse)
    async def task_instance_page(request: Request) -> HTMLResponse:
        ti, rows, listing = await views.task_instance(request)
        return HTMLResponse(render_task_instance(rows, listing, *ti, ui_root=ui_root(request)))

    @app.get("/api/task-instance")
    async def task_instance_json(request: Request) -> JSONResponse:
        ti, rows, listing = await views.task_instance(request)
        keys = ("dag_id", "run_id", "task_id", "map_index")
        return JSONResponse(
            {"task_instance": dict(zip(keys, ti, strict=True)), **replace(listing, rows=tuple(rows)).to_dict()}
        )

    return app


class _Views:
    """The request handling shared by the HTML and JSON routes."""

    def __init__(
        self,
        lister: BatchLister,
        records: AirflowRecords,
        access: DagAccess,
        conn_ids: Callable[[], Sequence[str]],
    ) -> None:
        self.lister, self.records, self.access, self.conn_ids = lister, records, access, conn_ids

    async def listing(self, request: Request) -> tuple[Query, Listing]:
        readable = await self.access.dag_filter(request)
        query = parse_query(request.query_params, list(self.conn_ids()))
        flt = replace(query.flt, dag_allowed=_memo(readable))
        since = time.time() - query.days * DAY_SECONDS
        listing = await run_in_threadpool(self.lister.find, query.conn_ids, flt, since=since, limit=query.limit)
        listing = await run_in_threadpool(self._with_estimates, listing)
        return query, await self._for_viewer(request, listing)

    async def task_instance(self, request: Request) -> tuple[tuple[str, str, str, int], list[BatchRow], Listing]:
        readable = await self.access.dag_filter(request)
        params = request.query_params
        dag_id, run_id, task_id = (_required(params, name) for name in ("dag_id", "run_id", "task_id"))
        map_index = _int_param(params, "map_index", -1, -1, 1_000_000)
        if not await run_in_threadpool(readable, {dag_id}):
            raise HTTPException(403, f"You may not read DAG {dag_id!r}")
        query = parse_query(params, list(self.conn_ids()))
        flt = BatchFilter(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
        since = time.time() - query.days * DAY_SECONDS
        listing = await run_in_threadpool(self.lister.find, query.conn_ids, flt, since=since, limit=query.limit)
        ti = (dag_id, run_id, task_id, map_index)
        rows, errors = await run_in_threadpool(self._add_recorded, listing, ti, query.conn_ids)
        listing = replace(listing, errors=listing.errors + tuple(errors))
        listing = await run_in_threadpool(self._with_estimates, replace(listing, rows=tuple(rows)))
        listing = await self._for_viewer(request, listing)
        return ti, list(listing.rows), listing

    async def _for_viewer(self, request: Request, listing: Listing) -> Listing:
        """Without the right to read connections, rows lose their connection and errors their detail."""
        if await self.access.connections_visible(request):
            return listing
        rows = tuple(replace(row, conn_id="") for row in listing.rows)
        errors = (SourceError("", HIDDEN_ERRORS),) if listing.errors else ()
        return replace(listing, rows=rows, errors=errors)

    def _add_recorded(
        self, listing: Listing, ti: tuple[str, str, str, int], conn_ids: Sequence[str]
    ) -> tuple[list[BatchRow], list[SourceError]]:
        """Add the batches Airflow's XCom names but the listing missed (older than its lookback)."""
        rows: list[BatchRow] = list(listing.rows)
        errors: list[SourceError] = []
        try:
            recorded = self.records.batch_ids(*ti)
        except Exception as err:
            return rows, [SourceError("airflow", f"cannot read the task's batch_id XCom: {describe_error(err)}")]
        known = {row.batch_id for row in rows}
        for batch_id in recorded:
            if batch_id in known:
                continue
            row, found_errors = self.lister.get(conn_ids, batch_id, ti)
            errors.extend(found_errors)
            if row is not None:
                rows.append(row)
        return rows, errors

    def _with_estimates(self, listing: Listing) -> Listing:
        """Fill each row's estimated cost from the build step's shard list, when Airflow has it."""
        if not listing.rows:
            return listing
        try:
            estimates = self.records.shard_estimates({(r.dag_id, r.run_id) for r in listing.rows})
        except Exception as err:
            error = SourceError("airflow", f"cannot read cost estimates: {describe_error(err)}")
            return replace(listing, errors=(*listing.errors, error))
        rows = tuple(
            replace(row, estimated_cost_usd=estimates.get((row.job_id or "", row.shard or ""))) for row in listing.rows
        )
        return replace(listing, rows=rows)


def parse_query(params: Any, configured: list[str]) -> Query:
    """Check every parameter the page understands; raise ``QueryError`` naming the bad one."""
    if not configured:
        raise QueryError(CONFIG_CONN_IDS, "", f"[{CONFIG_SECTION}] {CONFIG_CONN_IDS} lists no connection")
    conn_id = params.get("conn_id") or None
    if conn_id is not None and conn_id not in configured:
        raise QueryError(
            "conn_id",
            conn_id,
            f"connection {conn_id!r} is not one the page reads; add it to [{CONFIG_SECTION}] {CONFIG_CONN_IDS}",
            configured,
        )
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise QueryError("status", status, f"{status!r} is not a batch status", STATUSES)
    map_index = params.get("map_index")
    flt = BatchFilter(
        dag_id=params.get("dag_id") or None,
        status=status,
        run_id=params.get("run_id") or None,
        task_id=params.get("task_id") or None,
        map_index=None if map_index in (None, "") else _int_param(params, "map_index", -1, -1, 1_000_000),
    )
    return Query(
        conn_ids=(conn_id,) if conn_id else tuple(configured),
        configured=tuple(configured),
        selected_conn_id=conn_id,
        flt=flt,
        days=_int_param(params, "days", DEFAULT_DAYS, 1, MAX_DAYS),
        limit=_int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
    )


def _int_param(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(name, raw, f"{name} must be a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise QueryError(name, raw, f"{name} must be from {low} to {high}")
    return value


def _required(params: Any, name: str) -> str:
    value = params.get(name)
    if not value:
        raise QueryError(name, value or "", f"{name} is required")
    return str(value)


def _memo(readable: DagIdFilter) -> Callable[[str], bool]:
    """Ask the auth manager once per DAG id, however many batches the DAG has."""
    seen: dict[str, bool] = {}

    def allowed(dag_id: str) -> bool:
        if dag_id not in seen:
            seen[dag_id] = dag_id in readable({dag_id})
        return seen[dag_id]

    return allowed


def _echo(query: Query) -> dict[str, Any]:
    flt = query.flt
    return {
        "conn_ids": list(query.conn_ids),
        "dag_id": flt.dag_id,
        "status": flt.status,
        "run_id": flt.run_id,
        "task_id": flt.task_id,
        "map_index": flt.map_index,
        "days": query.days,
        "limit": query.limit,
    }
