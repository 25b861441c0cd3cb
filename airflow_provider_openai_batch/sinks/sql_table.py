"""The results table in SQL: safe names, column types per database family, and its DDL.

Table and schema names are checked against a strict pattern and then quoted with the hook's own
quoting (``escape_word_format``), so neither a user's parameter nor a record can inject SQL.

Columns follow ``core.result_table.RESULT_SCHEMA``; the primary key is ``(job_id, custom_id)``.

==================  ==================  ==========  ==================
column              PostgreSQL          SQLite      other databases
==================  ==================  ==========  ==================
text columns        TEXT                TEXT        VARCHAR(n) / TEXT
ints                INTEGER / BIGINT    INTEGER     INTEGER / BIGINT
cost_usd            DOUBLE PRECISION    REAL        DOUBLE PRECISION
parsed              JSONB               TEXT (JSON) TEXT (JSON)
embedding           REAL[]              TEXT (JSON) TEXT (JSON)
timestamps          TIMESTAMPTZ         TEXT (ISO)  TIMESTAMP (UTC)
==================  ==================  ==========  ==================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_provider_openai_batch.core.result_table import RESULT_SCHEMA

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# (PostgreSQL, SQLite, other) per column.
_TEXT = ("TEXT", "TEXT", "TEXT")
_ID = ("TEXT", "TEXT", "VARCHAR(512)")
_SHORT = ("TEXT", "TEXT", "VARCHAR(255)")
_INT = ("INTEGER", "INTEGER", "INTEGER")
_BIGINT = ("BIGINT", "INTEGER", "BIGINT")
_TIME = ("TIMESTAMPTZ", "TEXT", "TIMESTAMP")
COLUMN_TYPES: dict[str, tuple[str, str, str]] = {
    "job_id": _SHORT,
    "shard": _INT,
    "batch_id": _SHORT,
    "custom_id": _ID,
    "record_key": _ID,
    "status": _SHORT,
    "attempt": _INT,
    "http_status": _INT,
    "error_code": _SHORT,
    "error_message": _TEXT,
    "model": _SHORT,
    "content": _TEXT,
    "refusal": _TEXT,
    "finish_reason": _SHORT,
    "parsed": ("JSONB", "TEXT", "TEXT"),
    "embedding": ("REAL[]", "TEXT", "TEXT"),
    "input_tokens": _BIGINT,
    "cached_tokens": _BIGINT,
    "output_tokens": _BIGINT,
    "reasoning_tokens": _BIGINT,
    "cost_usd": ("DOUBLE PRECISION", "REAL", "DOUBLE PRECISION"),
    "request_id": _SHORT,
    "responded_at": _TIME,
    "batch_created_at": _TIME,
    "batch_ended_at": _TIME,
    "collected_at": _TIME,
}
assert tuple(COLUMN_TYPES) == tuple(RESULT_SCHEMA.names), "the SQL columns must follow RESULT_SCHEMA"
COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)
FAMILIES = {"postgresql": 0, "postgres": 0, "sqlite": 1}


class UnsafeNameError(ValueError):
    """A table or schema name outside ``[A-Za-z_][A-Za-z0-9_]*`` (at most 63 characters)."""


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UnsafeNameError(
            f"{what} name {name!r} is not allowed: use letters, digits and underscores, starting with a "
            "letter or underscore, at most 63 characters"
        )
    return name


@dataclass(frozen=True)
class ResultsTable:
    """
    A results table's quoted name and DDL for one database family.

    :param table: the table name, or ``schema.table``.
    :param schema: the schema, when not given in ``table``.
    :param dialect: the hook's dialect name (``postgresql``, ``sqlite``, …).
    :param quote: the hook's identifier quoting, e.g. ``"{}"`` (``escape_word_format``).
    """

    table: str
    schema: str | None = None
    dialect: str = "default"
    quote: str = '"{}"'

    def __post_init__(self) -> None:
        schema, table = self.schema, self.table
        if schema is None and isinstance(table, str) and table.count(".") == 1:
            schema, table = table.split(".")
            object.__setattr__(self, "schema", schema)
            object.__setattr__(self, "table", table)
        check_name(self.table, "table")
        if self.schema is not None:
            check_name(self.schema, "schema")

    @property
    def family(self) -> int:
        return FAMILIES.get(self.dialect, 2)

    @property
    def is_postgres(self) -> bool:
        return self.family == 0

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified name; safe to put in SQL text."""
        parts = [self.schema, self.table] if self.schema else [self.table]
        return ".".join(self.quote.format(part) for part in parts)

    @property
    def name(self) -> str:
        """The unquoted dotted name (lineage, logs)."""
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def column_list(self) -> str:
        return ", ".join(self.quote.format(column) for column in COLUMNS)

    def create_sql(self) -> str:
        q = self.quote.format
        columns = [
            f"{q(name)} {types[self.family]}{' NOT NULL' if not RESULT_SCHEMA.field(name).nullable else ''}"
            for name, types in COLUMN_TYPES.items()
        ]
        columns.append(f"PRIMARY KEY ({q('job_id')}, {q('custom_id')})")
        return f"CREATE TABLE IF NOT EXISTS {self.qualified} (\n  " + ",\n  ".join(columns) + "\n)"

    def delete_sql(self, placeholder: str) -> str:
        return f"DELETE FROM {self.qualified} WHERE {self.quote.format('job_id')} = {placeholder}"

    def insert_sql(self, placeholder: str) -> str:
        values = ", ".join([placeholder] * len(COLUMNS))
        return f"INSERT INTO {self.qualified} ({self.column_list()}) VALUES ({values})"

    def copy_sql(self) -> str:
        return f"COPY {self.qualified} ({self.column_list()}) FROM STDIN WITH (FORMAT csv)"
