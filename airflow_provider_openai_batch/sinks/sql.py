"""Results into a SQL table through any common-sql connection, replacing the job's rows in one transaction.

PostgreSQL loads with ``COPY ... FROM STDIN`` (CSV made column-wise by Arrow); other databases
(SQLite, the embedded default, and the rest) with batched ``executemany`` inserts. The delete of
the job's earlier rows and the load of the new ones commit together, so a rerun (retry, clear,
backfill) leaves exactly one row per (job_id, custom_id) and a failed load leaves the old rows.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import closing
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from airflow.providers.common.compat.sdk import BaseHook
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_provider_openai_batch.sinks.base import ResultSink, of_job
from airflow_provider_openai_batch.sinks.sql_table import COLUMNS, ResultsTable

DEFAULT_INSERT_ROWS = 5_000
_NAIVE_SECONDS = pa.timestamp("s")  # the same UTC instants, without the zone
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
_encode = msgspec.json.Encoder().encode


class SqlSink(ResultSink):
    """
    Write a job's rows into ``table`` over a common-sql connection (Postgres, SQLite, MySQL, …).

    The table is created when missing (see ``sinks.sql_table`` for its columns and types); names
    are validated and quoted. On PostgreSQL concurrent writers of the same job are serialized with
    a transaction-scoped advisory lock.

    :param conn_id: the connection; its hook must be a ``DbApiHook``.
    :param table: the table, or ``schema.table``.
    :param schema: the schema, if not in ``table``.
    :param create_table: create the table when it does not exist.
    :param insert_rows: rows per ``executemany`` call where there is no bulk path.
    """

    # Every row is re-encoded (CSV or parameters), so batches of 16k rows: the load's peak RSS was
    # ~25 MB lower than with 64k and levelled off within the first batches (``make bench``).
    read_rows = 16_384

    def __init__(
        self,
        conn_id: str,
        table: str,
        schema: str | None = None,
        *,
        create_table: bool = True,
        insert_rows: int = DEFAULT_INSERT_ROWS,
    ) -> None:
        ResultsTable(table, schema)  # fail on a bad name now, not after the batches ran
        self.conn_id = conn_id
        self.table = table
        self.schema = schema
        self.create_table = create_table
        self.insert_rows = insert_rows

    def get_hook(self) -> DbApiHook:
        hook = BaseHook.get_connection(self.conn_id).get_hook()
        if not isinstance(hook, DbApiHook):
            raise TypeError(f"connection {self.conn_id!r} gives a {type(hook).__name__}, not a common-sql DbApiHook")
        return hook

    def results_table(self, hook: DbApiHook) -> ResultsTable:
        return ResultsTable(self.table, self.schema, hook.dialect_name, hook.escape_word_format)

    def write(self, job_id: str, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
        hook = self.get_hook()
        table = self.results_table(hook)
        with closing(hook.get_conn()) as conn:
            if hook.supports_autocommit:
                hook.set_autocommit(conn, False)  # one transaction for the delete and the load
            cursor = conn.cursor()
            try:
                if self.create_table:
                    cursor.execute(table.create_sql())
                if table.is_postgres:
                    cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{table.name}:{job_id}",))
                cursor.execute(table.delete_sql(hook.placeholder), (job_id,))
                batches = of_job(job_id, batches)
                if table.is_postgres and _can_copy(cursor):
                    rows = _copy(cursor, table, batches)
                else:
                    rows = self._insert(cursor, table, hook.placeholder, batches)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cursor.close()
        return {"kind": "sql", "conn_id": self.conn_id, "table": table.name, "rows": rows}

    def lineage(self, job_id: str) -> tuple[str, str]:
        conn = BaseHook.get_connection(self.conn_id)
        table = ResultsTable(self.table, self.schema)
        if conn.conn_type == "sqlite":
            return f"sqlite://{conn.host}", table.name
        scheme = "postgres" if conn.conn_type == "postgres" else conn.conn_type
        authority = f"{conn.host}:{conn.port}" if conn.port else str(conn.host)
        schema = table.schema or ("public" if scheme == "postgres" else None)
        parts = [conn.schema, schema, table.table]
        return f"{scheme}://{authority}", ".".join(p for p in parts if p)

    def _insert(self, cursor: Any, table: ResultsTable, placeholder: str, batches: Iterable[pa.RecordBatch]) -> int:
        sql = table.insert_sql(placeholder)
        rows = 0
        for batch in batches:
            for start in range(0, batch.num_rows, self.insert_rows):
                chunk = _python_rows(batch.slice(start, self.insert_rows), sqlite=table.family == "sqlite")
                cursor.executemany(sql, chunk)
                rows += len(chunk)
        return rows


def _can_copy(cursor: Any) -> bool:
    return hasattr(cursor, "copy") or hasattr(cursor, "copy_expert")


def _copy(cursor: Any, table: ResultsTable, batches: Iterable[pa.RecordBatch]) -> int:
    """``COPY FROM STDIN`` with psycopg 3 (``cursor.copy``) or psycopg2 (``copy_expert``)."""
    sql = table.copy_sql()
    rows = 0
    if hasattr(cursor, "copy"):
        from airflow_provider_openai_batch.sinks.copy_writer import QueuedCopyWriter

        # psycopg 3: a writer thread sends while this one turns the next batch into CSV.
        with cursor.copy(sql, writer=QueuedCopyWriter(cursor)) as copy:
            for batch in batches:
                for start in range(0, batch.num_rows, COPY_ROWS):  # CSV a few MiB at a time
                    copy.write(_postgres_csv(batch.slice(start, COPY_ROWS)))
                rows += batch.num_rows
        return rows
    for batch in batches:
        cursor.copy_expert(sql, io.BytesIO(_postgres_csv(batch)))
        rows += batch.num_rows
    return rows


COPY_ROWS = 8_192  # rows turned into CSV at once


def _postgres_csv(batch: pa.RecordBatch) -> bytes:
    """CSV for COPY: strings quoted, NULL unquoted-empty, arrays as ``{…}`` literals, no NUL characters."""
    columns = []
    for name in COLUMNS:
        column = batch.column(name)
        if name == "embedding":
            column = pa.array(_array_literals(column), pa.string())
        elif pa.types.is_timestamp(column.type):
            column = _utc_text(column, " ")
        elif pa.types.is_string(column.type):
            # PostgreSQL text cannot hold NUL, and jsonb refuses its \u0000 escape.
            column = pc.replace_substring(column, "\x00", "")
            if name == "parsed":
                column = pc.replace_substring(column, "\\u0000", "")
        columns.append(column)
    out = pa.BufferOutputStream()
    pa_csv.write_csv(pa.Table.from_arrays(columns, names=list(COLUMNS)), out, _CSV_OPTIONS)
    return out.getvalue().to_pybytes()


def _utc_text(column: pa.Array, separator: str) -> pa.Array:
    """``2026-01-01 00:00:00Z`` text of UTC timestamps (Arrow formats zone-aware values ten times slower)."""
    text = pc.cast(column, _NAIVE_SECONDS, safe=False).cast(pa.string())  # rows hold whole seconds
    if separator != " ":
        text = pc.replace_substring(text, " ", separator)
    return pc.binary_join_element_wise(text, "Z", "")


def _array_literals(column: pa.Array) -> list[str | None]:
    if column.null_count == len(column):
        return [None] * len(column)
    return [None if v is None else "{" + ",".join(format(x, ".9g") for x in v) + "}" for v in column.to_pylist()]


def _python_rows(batch: pa.RecordBatch, *, sqlite: bool) -> list[tuple[Any, ...]]:
    """DB-API parameters: embeddings as JSON text; timestamps as ISO text on SQLite, datetimes elsewhere."""
    columns: list[Iterator[Any] | list[Any]] = []
    for name in COLUMNS:
        column = batch.column(name)
        if name == "embedding":
            columns.append([None if v is None else _encode(v).decode() for v in column.to_pylist()])
        elif sqlite and pa.types.is_timestamp(column.type):
            columns.append(_utc_text(column, "T").to_pylist())
        else:
            columns.append(column.to_pylist())
    return list(zip(*columns, strict=True))
