"""The cache as a table, on SQLite (a file) and on the suite's PostgreSQL: lookups, upserts, one transaction."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import pytest

from airflow_provider_openai_batch.core.cache.lookup import CacheLookup
from airflow_provider_openai_batch.core.cache.sql_store import SqlAnswers
from airflow_provider_openai_batch.core.cache.store import CacheError
from tests.conftest import POSTGRES_URL
from tests.unit.core.cache.test_store import entries, key


@pytest.fixture(params=["sqlite", "postgres"])
def answers(request, tmp_path) -> Iterator[SqlAnswers]:
    if request.param == "sqlite":
        path = str(tmp_path / "cache.db")
        yield SqlAnswers(lambda: sqlite3.connect(path), "answer_cache", "sqlite")
        return
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(POSTGRES_URL).close()
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable: {err}")
    table = f"answer_cache_{uuid.uuid4().hex[:8]}"
    yield SqlAnswers(lambda: psycopg.connect(POSTGRES_URL), table, "postgres")
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def look(answers: SqlAnswers, ids: range, **options) -> dict[str, str]:
    lookup = CacheLookup(answers, **options)
    lookup.add([key(i) for i in ids], [f"r{i}" for i in ids], 0)
    return {row["custom_id"]: row["content"] for table in lookup.hits() for row in table.to_pylist()}


def test_answers_written_in_one_transaction_are_found_and_the_newest_wins(answers):
    assert answers.empty()
    writer = answers.writer()
    writer.add(entries(range(600), content="old", age=3600))
    writer.commit()
    writer = answers.writer()
    writer.add(entries(range(300), content="new"))
    writer.commit()
    found = look(answers, range(550, 700))
    assert found == {f"r{i}": f"old{i}" for i in range(550, 600)}
    assert look(answers, range(2)) == {"r0": "new0", "r1": "new1"}
    assert set(look(answers, range(600), max_age=60)) == {f"r{i}" for i in range(300)}
    stats = answers.stats()
    assert (stats.entries, stats.by_model) == (600, {"m": 600})
    assert answers.evict(model="m") == 600 and answers.empty()


def test_a_run_that_dies_before_commit_adds_nothing(answers):
    writer = answers.writer()
    writer.add(entries(range(10)))
    writer.discard()
    assert answers.empty()


def test_an_unreachable_table_fails_with_a_cache_error(tmp_path):
    def refuse():
        raise OSError("connection refused")

    with pytest.raises(CacheError, match="cannot be reached"):
        SqlAnswers(refuse, "answer_cache", "sqlite").empty()
