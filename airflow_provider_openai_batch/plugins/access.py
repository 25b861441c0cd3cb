"""Who may see what: a batch only to a user who may read its DAG, connection details only to a
user who may read connections.

The page is mounted on Airflow's api-server, where plugin apps get no authentication of their
own; without these checks anyone reaching the server would see every DAG's batches and costs,
and which connections exist and why they fail (Airflow's own connections API answers 403).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import HTTPException, Request

DagIdFilter = Callable[[set[str]], set[str]]


class DagAccess(Protocol):
    """Authenticates a request and returns the filter keeping the DAG ids its user may read.

    Raises ``fastapi.HTTPException`` (401/403) when the request carries no valid identity.
    """

    async def dag_filter(self, request: Request) -> DagIdFilter: ...

    async def connections_visible(self, request: Request) -> bool:
        """Whether the request's user may read connections (their ids and errors)."""
        ...


class AirflowDagAccess:
    """Airflow's own identity (the UI's session cookie or a bearer token) and its auth manager's rules."""

    async def dag_filter(self, request: Request) -> DagIdFilter:
        from airflow.api_fastapi.app import get_auth_manager

        user = await _user(request)
        manager = get_auth_manager()

        def readable(dag_ids: set[str]) -> set[str]:
            return set(manager.filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET"))

        return readable

    async def connections_visible(self, request: Request) -> bool:
        from airflow.api_fastapi.app import get_auth_manager

        user = await _user(request)
        return bool(get_auth_manager().is_authorized_connection(method="GET", user=user))


async def _user(request: Request) -> Any:
    """The request's Airflow user: a bearer token, else the UI's session cookie."""
    from airflow.api_fastapi.core_api import security

    if "request" in inspect.signature(security.get_user).parameters:
        return await security.get_user(request, None, _bearer(request))
    # Airflow 3.0: get_user takes the token alone; the UI keeps it in the ``_token`` cookie.
    credentials = _bearer(request)
    token = credentials.credentials if credentials else request.cookies.get("_token")
    if not token:
        raise HTTPException(401, "Not authenticated")
    return await security.get_user(token)  # type: ignore[arg-type]


def _bearer(request: Request):  # -> HTTPAuthorizationCredentials | None
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
