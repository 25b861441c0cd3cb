"""SqlSink on SQLite (the embedded default) and on a real PostgreSQL (COPY): one row per (job, custom_id)."""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid

import psycopg
import pytest

from airflow_provider_openai_batch.core.collect.result_table import reconciled_batches
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, Reconciler
from airflow_provider_openai_batch.sinks import sql as sql_module
from airflow_provider_openai_batch.sinks.sql import SqlSink
from airflow_provider_openai_batch.sinks.sql_table import COLUMNS, ResultsTable, UnsafeNameError
from tests.conftest import POSTGRES_URL
from tests.unit.sinks.helpers import batches, embedding_line


def failing(good):
    yield from good
    raise RuntimeError("the source broke halfway")


@pytest.fixture
def sqlite_conn(tmp_path, monkeypatch) -> tuple[str, str]:
    path = tmp_path / "results.db"
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return "results_db", str(path)


def sqlite_rows(path: str, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["results; DROP TABLE x", 'res"ults', "a.b.c", "1results", "", "x" * 64])
def test_unsafe_table_names_are_refused_before_anything_runs(table):
    with pytest.raises(UnsafeNameError, match="not allowed"):
        SqlSink("any", table)


def test_rows_of_another_job_are_refused(sqlite_conn):
    conn_id, path = sqlite_conn
    with pytest.raises(ValueError, match="job 'other'"):
        SqlSink(conn_id, "results").write("job", batches("other", ["a"]))
    assert sqlite_rows(path, "SELECT count(*) FROM results") == [(0,)]


def test_names_are_quoted_with_the_hooks_quoting_and_split_on_the_schema():
    table = ResultsTable("analytics.order", dialect="mysql", quote="`{}`")
    assert table.qualified == "`analytics`.`order`"
    assert table.delete_sql("%s") == "DELETE FROM `analytics`.`order` WHERE `job_id` = %s"


# -- SQLite -----------------------------------------------------------------------------------


def test_sqlite_table_is_created_with_the_documented_columns(sqlite_conn):
    conn_id, path = sqlite_conn
    report = SqlSink(conn_id, "results").write("job", batches("job", ["a", "b"]))
    assert report == {"kind": "sql", "conn_id": conn_id, "table": "results", "rows": 2}
    columns = [row[1] for row in sqlite_rows(path, "PRAGMA table_info(results)")]
    assert tuple(columns) == COLUMNS
    primary_key = [
        row[1] for row in sorted(sqlite_rows(path, "PRAGMA table_info(results)"), key=lambda r: r[5]) if row[5]
    ]
    assert primary_key == ["job_id", "custom_id"]
    assert sqlite_rows(path, "SELECT custom_id, status, responded_at FROM results ORDER BY custom_id") == [
        ("a", "succeeded", "2026-01-01T00:00:00Z"),
        ("b", "succeeded", "2026-01-01T00:00:00Z"),
    ]


def test_sqlite_rerun_replaces_the_jobs_rows_and_leaves_other_jobs(sqlite_conn, copies):
    conn_id, path = sqlite_conn
    sink = SqlSink(conn_id, "results", insert_rows=2)
    sink.write("other", batches("other", ["a"], "theirs"))
    sink.write("job", batches("job", ["a", "b", "c"], "first"))
    sink.write("job", batches("job", ["a", "b", "c"], "second"))
    assert sqlite_rows(path, "SELECT job_id, custom_id, content FROM results ORDER BY job_id, custom_id") == [
        ("job", "a", "second"),
        ("job", "b", "second"),
        ("job", "c", "second"),
        ("other", "a", "theirs"),
    ]
    assert copies == []  # batched inserts: SQLite has no COPY


def test_sqlite_failed_load_rolls_back_to_the_previous_rows(sqlite_conn):
    conn_id, path = sqlite_conn
    sink = SqlSink(conn_id, "results", insert_rows=1)
    sink.write("job", batches("job", ["a", "b"], "kept"))
    with pytest.raises(RuntimeError, match="halfway"):
        sink.write("job", failing(batches("job", ["a", "b", "c"], "lost", size=1)))
    assert sqlite_rows(path, "SELECT custom_id, content FROM results ORDER BY custom_id") == [
        ("a", "kept"),
        ("b", "kept"),
    ]


def test_sqlite_stores_embeddings_and_parsed_json_as_json_text(sqlite_conn):
    conn_id, path = sqlite_conn
    reconciler = Reconciler(BatchOutcome("job", 0, "b", "completed"), ["e"])
    SqlSink(conn_id, "results").write("job", reconciled_batches(reconciler, [embedding_line("e", [0.5, -0.25])]))
    SqlSink(conn_id, "results").write("json", batches("json", ["j"], '{"x": [1, 2]}', expect_json=True))
    assert sqlite_rows(path, "SELECT embedding, parsed FROM results ORDER BY job_id") == [
        ("[0.5,-0.25]", None),
        (None, '{"x":[1,2]}'),
    ]


# -- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def pg_table(postgres_conn) -> str:
    name = f"results_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
        db.execute(f'DROP TABLE IF EXISTS "{name}"')


def pg_rows(sql: str) -> list[tuple]:
    with psycopg.connect(POSTGRES_URL) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def copies(monkeypatch) -> list[str]:
    """Records each COPY the sink runs (and runs it)."""
    calls: list[str] = []
    original = sql_module._copy

    def recording(cursor, table, batches):
        calls.append(table.copy_sql())
        return original(cursor, table, batches)

    monkeypatch.setattr(sql_module, "_copy", recording)
    return calls


def test_postgres_loads_with_copy_into_typed_columns(postgres_conn, pg_table, copies):
    reconciler = Reconciler(BatchOutcome("emb", 0, "b", "completed", created_at=1), ["e"])
    sink = SqlSink(postgres_conn, pg_table)
    sink.write("emb", reconciled_batches(reconciler, [embedding_line("e", [0.5, -0.25])]))
    sink.write("job", batches("job", ["a", "b"], 'text with "quotes", commas,\nnew lines and a \x00 NUL'))
    sink.write("json", batches("json", ["j"], '{"x": [1, 2]}', expect_json=True))
    types = dict(
        pg_rows(f"SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{pg_table}'")
    )
    assert (types["parsed"], types["embedding"], types["collected_at"]) == (
        "jsonb",
        "ARRAY",
        "timestamp with time zone",
    )
    columns = "job_id, custom_id, content, parsed, embedding, responded_at, error_code"
    rows = pg_rows(f'SELECT {columns} FROM "{pg_table}" ORDER BY 1, 2')
    assert [r[:2] for r in rows] == [("emb", "e"), ("job", "a"), ("job", "b"), ("json", "j")]
    assert rows[0][4] == [0.5, -0.25] and rows[0][3] is None and rows[0][6] is None
    assert rows[1][2] == 'text with "quotes", commas,\nnew lines and a  NUL'
    assert rows[3][3] == {"x": [1, 2]}
    assert rows[1][5].isoformat() == "2026-01-01T00:00:00+00:00"
    assert len(copies) == 3
    assert all(
        c.startswith(f'COPY "{pg_table}" ("job_id", ') and c.endswith("FROM STDIN WITH (FORMAT csv)") for c in copies
    )


def test_postgres_rerun_replaces_the_jobs_rows(postgres_conn, pg_table):
    sink = SqlSink(postgres_conn, pg_table)
    sink.write("job", batches("job", [f"r{i}" for i in range(1000)], "first", size=300))
    sink.write("job", batches("job", [f"r{i}" for i in range(1000)], "second", size=300))
    assert pg_rows(f'SELECT content, count(*) FROM "{pg_table}" GROUP BY content') == [("second", 1000)]


def test_postgres_failed_load_rolls_back_to_the_previous_rows(postgres_conn, pg_table):
    sink = SqlSink(postgres_conn, pg_table)
    sink.write("job", batches("job", ["a", "b"], "kept"))
    with pytest.raises(RuntimeError, match="halfway"):
        sink.write("job", failing(batches("job", ["a", "b", "c"], "lost", size=1)))
    assert pg_rows(f'SELECT custom_id, content FROM "{pg_table}" ORDER BY 1') == [("a", "kept"), ("b", "kept")]


def test_postgres_concurrent_writers_of_one_job_leave_one_row_per_request(postgres_conn, pg_table):
    sink = SqlSink(postgres_conn, pg_table)
    sink.write("job", batches("job", ["a"], "create the table first"))
    errors: list[BaseException] = []

    def write(content: str) -> None:
        try:
            sink.write("job", batches("job", [f"r{i}" for i in range(500)], content, size=50))
        except BaseException as err:  # collected: the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=write, args=(f"writer-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ((rows, distinct, contents),) = pg_rows(
        f'SELECT count(*), count(DISTINCT custom_id), count(DISTINCT content) FROM "{pg_table}"'
    )
    assert (rows, distinct, contents) == (500, 500, 1)
