"""Records from a real Postgres through a common-sql connection, read with a server-side cursor.

The server comes from OPENAI_BATCH_TEST_POSTGRES_URL (default: the local one). When it cannot be
reached the tests are skipped, saying why; with CI=true they fail instead.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_provider_openai_batch.operators.build import OpenAIBatchBuildOperator
from airflow_provider_openai_batch.operators.sources import sql_records
from tests.unit.operators.fakes import context

POSTGRES_URL = os.environ.get("OPENAI_BATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CONN_ID = "records_postgres"
ROWS = 25_000


def _airflow_conn(url: str) -> str:
    parts = urlsplit(url)
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": parts.hostname,
            "port": parts.port or 5432,
            "login": parts.username,
            "password": parts.password,
            "schema": parts.path.lstrip("/"),
        }
    )


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[object, str]]:
    """A connection to the test server and a fresh table of ROWS feedback rows."""
    import psycopg

    try:
        connection = psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres at {POSTGRES_URL} is required on CI: {err}")
        pytest.skip(f"Postgres at {POSTGRES_URL} is not reachable ({err}); set OPENAI_BATCH_TEST_POSTGRES_URL")
    table = f"feedback_{uuid.uuid4().hex[:8]}"
    connection.execute(
        f"create table {table} as select g as id, 'review ' || g as text, g % 5 as stars "
        f"from generate_series(1, {ROWS}) g"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _airflow_conn(POSTGRES_URL))
        yield connection, table
    connection.execute(f"drop table {table}")
    connection.close()


def test_build_reads_a_postgres_query_into_shards(postgres, tmp_path):
    _, table = postgres
    op = OpenAIBatchBuildOperator(
        task_id="build",
        sql=f"select id, text, stars from {table} where stars >= %(stars)s order by id",
        sql_conn_id=CONN_ID,
        sql_parameters={"stars": 3},
        key_field="id",
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "{{ stars }} stars: {{ text }}"}],
        body={"max_completion_tokens": 4},
        work_dir=str(tmp_path),
        job_id="pg",
        max_requests_per_shard=4_000,
    )
    ctx = context()
    shards = op.execute(ctx)
    assert ctx["ti"].pushed["summary"]["requests"] == ROWS * 2 // 5
    assert [s["requests"] for s in shards] == [4_000, 4_000, 2_000]
    first = json.loads(Path(shards[0]["path"].removeprefix("file://")).read_text().splitlines()[0])
    assert first["custom_id"] == "3"
    assert first["body"]["messages"] == [{"role": "user", "content": "3 stars: review 3"}]


def test_rows_are_fetched_from_a_server_side_cursor(postgres):
    connection, table = postgres
    records = sql_records(CONN_ID, f"select id from {table} order by id", batch_rows=1_000)
    assert next(records) == {"id": 1}
    # The server holds the result: the reading session's last statement fetches from a named cursor.
    (query,) = connection.execute(
        "select query from pg_stat_activity where pid <> pg_backend_pid() and query like %s",
        ("%openai_batch_%",),
    ).fetchone()
    assert "FETCH" in query.upper() and "openai_batch_" in query
    assert sum(1 for _ in records) == ROWS - 1
