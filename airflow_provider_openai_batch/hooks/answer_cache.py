"""Where an answer cache lives, from what a DAG says: a folder (``ObjectStoragePath``) or a common-sql table.

``cache="s3://aws_default@bucket/openai-cache"`` (or a local path) is a folder of Parquet parts;
``cache={"conn_id": "warehouse", "table": "answer_cache"}`` — or ``"warehouse:answer_cache"`` — is
a table on that PostgreSQL or SQLite connection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_openai_batch.hooks.storage import StorageParts

CacheSpec = str | Mapping[str, str]
_SQL_SHORTHAND = re.compile(r"([A-Za-z0-9_\-]+):([A-Za-z_][A-Za-z0-9_.]*)")
_FAMILIES = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite"}


def table_of(cache: CacheSpec) -> tuple[str, str] | None:
    """``(conn_id, table)`` when the cache is a SQL table, else None."""
    if isinstance(cache, Mapping):
        if set(cache) != {"conn_id", "table"}:
            raise ValueError(f"a cache table is {{'conn_id': ..., 'table': ...}}; got keys {sorted(cache)}")
        return str(cache["conn_id"]), str(cache["table"])
    found = _SQL_SHORTHAND.fullmatch(str(cache))
    return (found.group(1), found.group(2)) if found else None


def answer_store(cache: CacheSpec) -> Any:
    """The store for ``cache``: ``StorageParts`` or a ``SqlAnswers`` on the connection's hook."""
    table = table_of(cache)
    if table is None:
        return StorageParts(str(cache))
    from airflow.providers.common.compat.sdk import BaseHook

    from airflow_provider_openai_batch.core.cache.sql_store import SqlAnswers

    conn_id, name = table
    hook = BaseHook.get_connection(conn_id).get_hook()
    family = _FAMILIES.get(getattr(hook, "dialect_name", "") or "", getattr(hook, "dialect_name", "?"))
    return SqlAnswers(hook.get_conn, name, family, location=f"{conn_id}:{name}")


def has_answers(store: Any) -> bool:
    """Whether there is anything to look up (an empty cache, the first run, skips the lookup)."""
    if hasattr(store, "matching"):
        return not store.empty()
    from airflow_provider_openai_batch.core.cache.store import listed

    return bool(listed(store))


def entry_writer(store: Any) -> Any:
    """Where a run's new answers go: one new part, or one transaction on the table."""
    if hasattr(store, "writer"):
        return store.writer()
    from airflow_provider_openai_batch.core.cache.store import EntryWriter

    return EntryWriter(store)
