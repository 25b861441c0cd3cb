"""The results table in SQL: safe names, column types per database family, and its DDL.

Table and schema names are checked against a strict pattern and then quoted with the hook's own
quoting (``escape_word_format``), so neither a user's parameter nor a record can inject SQL.

The columns, and their type in each database family, are those of ``core.collect.result_columns``; the
primary key is ``(job_id, custom_id)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_provider_openai_batch.core.collect.result_columns import RESULT_COLUMNS, RESULT_FIELDS, Family

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

COLUMNS: tuple[str, ...] = RESULT_FIELDS
# Hook dialect names with their own column types; every other database gets the generic ones.
FAMILIES: dict[str, Family] = {"postgresql": "postgres", "postgres": "postgres", "sqlite": "sqlite"}


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
    def family(self) -> Family:
        return FAMILIES.get(self.dialect, "generic")

    @property
    def is_postgres(self) -> bool:
        return self.family == "postgres"

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
            f"{q(column.name)} {column.sql.of(self.family)}{'' if column.nullable else ' NOT NULL'}"
            for column in RESULT_COLUMNS
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
