"""The column table is the one definition of the result row: struct, schema, SQL and docs follow it."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import msgspec
import pytest

from airflow_provider_openai_batch.core.collect.result_columns import (
    BATCH_FIELDS,
    RESULT_COLUMNS,
    RESULT_FIELDS,
    RESULT_SCHEMA,
    TOKEN_FIELDS,
    VALUE_FIELDS,
    Column,
)
from airflow_provider_openai_batch.core.collect.result_table import TableCounts
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileCounts, Reconciler
from airflow_provider_openai_batch.sinks.sql_table import ResultsTable
from tests.unit.core.collect.rows import reconciled_rows

COLUMNS_PAGE = Path(__file__).resolve().parents[4] / "docs" / "results-columns.md"


# The Python value a row holds for each Arrow type (timestamps: epoch seconds).
def test_the_arrow_schema_is_the_tables():
    assert [(f.name, f.type, f.nullable) for f in RESULT_SCHEMA] == [
        (c.name, c.arrow, c.nullable) for c in RESULT_COLUMNS
    ]


def test_every_column_comes_from_the_request_the_batch_or_the_custom_id():
    reconciler = Reconciler(BatchOutcome("job", 0, "b", "completed"), ["a"])
    assert tuple(reconciler.batch_values()) == BATCH_FIELDS
    assert set(VALUE_FIELDS) | set(BATCH_FIELDS) | {"record_key"} == set(RESULT_FIELDS)
    assert not set(VALUE_FIELDS) & set(BATCH_FIELDS)


def test_the_reconcilers_values_land_in_their_named_columns():
    line = msgspec.json.encode(
        {
            "custom_id": "a",
            "response": {
                "status_code": 200,
                "request_id": "req_1",
                "body": {
                    "object": "chat.completion",
                    "model": "m",
                    "created": 1_767_225_600,
                    "choices": [{"finish_reason": "stop", "message": {"content": "hi", "refusal": "no"}}],
                    "usage": {
                        "prompt_tokens": 7,
                        "completion_tokens": 5,
                        "prompt_tokens_details": {"cached_tokens": 3},
                        "completion_tokens_details": {"reasoning_tokens": 2},
                    },
                },
            },
        }
    )
    outcome = BatchOutcome("job", 4, "batch_1", "completed", attempt=2, created_at=10, ended_at=20)
    reconciler = Reconciler(outcome, ["a"])
    reconciler.collected_at = 30
    (row,) = reconciled_rows(reconciler, [line])
    assert row.to_dict() == {
        **dict.fromkeys(RESULT_FIELDS),
        **{"job_id": "job", "shard": 4, "batch_id": "batch_1", "custom_id": "a", "record_key": "a"},
        **{"status": "succeeded", "attempt": 2, "http_status": 200, "model": "m", "content": "hi", "refusal": "no"},
        **{"finish_reason": "stop", "input_tokens": 7, "cached_tokens": 3, "output_tokens": 5, "reasoning_tokens": 2},
        **{"request_id": "req_1", "responded_at": 1_767_225_600, "batch_created_at": 10, "batch_ended_at": 20},
        "collected_at": 30,
        "cached": False,
    }


def test_both_counters_total_the_token_columns():
    for counts in (ReconcileCounts(), TableCounts()):
        assert set(TOKEN_FIELDS) <= {f.name for f in fields(counts)}


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        (
            "postgresql",
            ['"custom_id" TEXT NOT NULL', '"parsed" JSONB', '"embedding" REAL[]', '"responded_at" TIMESTAMPTZ'],
        ),
        ("sqlite", ['"custom_id" TEXT NOT NULL', '"parsed" TEXT', '"cost_usd" REAL', '"collected_at" TEXT NOT NULL']),
        ("mysql", ['"custom_id" VARCHAR(512) NOT NULL', '"job_id" VARCHAR(255) NOT NULL', '"responded_at" TIMESTAMP']),
    ],
)
def test_the_sql_table_takes_each_columns_type_for_the_database_family(dialect, expected):
    ddl = ResultsTable("results", dialect=dialect).create_sql()
    lines = [line.strip().rstrip(",") for line in ddl.splitlines()[1:-1]]
    assert [line.split(" ")[0].strip('"') for line in lines[:-1]] == list(RESULT_FIELDS)
    assert set(expected) <= set(lines)
    assert lines[-1] == 'PRIMARY KEY ("job_id", "custom_id")'


def docs_row(column: Column) -> str:
    arrow = f"`{column.arrow}`" + ("" if column.nullable else ", not null")
    sql = " | ".join(f"`{column.sql.of(family)}`" for family in ("postgres", "sqlite", "generic"))
    return f"| `{column.name}` | {arrow} | {sql} | {column.meaning} |"


def docs_table() -> str:
    header = "| column | Arrow (Parquet) type | PostgreSQL | SQLite | other SQL | |\n|---|---|---|---|---|---|"
    return "\n".join([header, *map(docs_row, RESULT_COLUMNS)])


def test_the_docs_list_every_column_with_its_types_and_meaning():
    text = COLUMNS_PAGE.read_text(encoding="utf-8")
    found = re.search(r"^\| column \| Arrow \(Parquet\) type .*?(?=\n\n)", text, re.MULTILINE | re.DOTALL)
    assert found, "docs/results-columns.md: the results column table is missing"
    assert found.group(0) == docs_table(), f"docs/results-columns.md: replace the column table with\n{docs_table()}"
