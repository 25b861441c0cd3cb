"""Where the build operator's records come from: a list (XCom), a file on any object store, or SQL.

Files are opened through ``ObjectStoragePath`` (local paths, ``file://``, ``s3://``, ...) and read
streamed by ``core.build.sources``. A SQL query runs through any common-sql connection; its rows are
fetched a batch at a time from a server-side cursor on Postgres, so a query over millions of rows
never sits in the worker's memory. Other drivers get ``fetchmany`` on a plain cursor, which streams
with SQLite, but some drivers (e.g. MySQL's default cursor) buffer the whole result when the query runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from airflow.providers.common.compat.sdk import BaseHook, ObjectStoragePath

from airflow_provider_openai_batch.core.build.sources import BATCH_ROWS, read_cursor, read_records
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.hooks.storage import as_storage_path

# DB-API drivers whose ``cursor(name=...)`` is a server-side cursor.
_SERVER_SIDE_DRIVERS = frozenset({"psycopg2", "psycopg"})


def file_records(location: str | ObjectStoragePath, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of a JSONL, CSV or Parquet file (or ``.jsonl.gz``/``.csv.gz``), local or on an object store.

    A directory or prefix is read file by file in name order, skipping names that start with
    ``_`` or ``.`` (``_SUCCESS`` markers), as Spark and warehouse exports write them.
    """
    path = as_storage_path(location)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", "."))), key=str)
        if not files:
            raise OpenAIBatchInputError(f"records folder {location} holds no files", path=str(location))
        base = str(location).rstrip("/")
        for file in files:
            yield from _one_file(file, f"{base}/{file.name}", fmt)
        return
    if not path.exists():
        raise OpenAIBatchInputError(f"records file {location} does not exist", path=str(location))
    yield from _one_file(path, str(location), fmt)


def _one_file(path: ObjectStoragePath, label: str, fmt: str | None) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        yield from read_records(handle, label, fmt)


def sql_records(
    conn_id: str,
    sql: str,
    parameters: Mapping[str, Any] | Iterable[Any] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[dict[str, Any]]:
    """Rows of ``sql`` through the common-sql connection ``conn_id``, a batch at a time."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook

    hook = BaseHook.get_hook(conn_id)
    if not isinstance(hook, DbApiHook):
        raise OpenAIBatchInputError(
            f"connection {conn_id!r} ({type(hook).__name__}) is not a SQL connection; use one whose hook is "
            "a common-sql DbApiHook (postgres, sqlite, mysql, snowflake, ...)"
        )
    connection = hook.get_conn()
    try:
        cursor = _streaming_cursor(connection, batch_rows)
        try:
            if parameters is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, parameters)
            yield from read_cursor(cursor, batch_rows)
        finally:
            cursor.close()
    finally:
        connection.close()


def _streaming_cursor(connection: Any, batch_rows: int) -> Any:
    if type(connection).__module__.split(".")[0] in _SERVER_SIDE_DRIVERS:
        cursor = connection.cursor(name=f"openai_batch_{uuid.uuid4().hex[:12]}")
        cursor.itersize = batch_rows
        return cursor
    return connection.cursor()
