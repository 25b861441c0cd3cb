"""The result row's columns, defined once: every destination and check is derived from this table.

The Arrow schema (Parquet, JSONL, the stages), the SQL table's DDL, the order of the values the
reconciler produces and the column table in docs/results-columns.md all come from
:data:`RESULT_COLUMNS`; a test holds that page to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

ResultStatus = Literal["succeeded", "failed", "invalid_output", "expired", "cancelled", "missing"]
RESULT_STATUSES: tuple[ResultStatus, ...] = (
    "succeeded",
    "failed",
    "invalid_output",
    "expired",
    "cancelled",
    "missing",
)

# How SQL types differ: PostgreSQL, SQLite, and any other database (MySQL, Snowflake…), which gets
# portable types (bounded VARCHAR for keys, JSON as text).
Family = Literal["postgres", "sqlite", "generic"]

# Where a column's value comes from: the request's own line (or its absence), the batch and run
# (one value for all of a reconciliation's rows), or a copy of ``custom_id``.
Source = Literal["request", "batch", "custom_id"]


@dataclass(frozen=True, slots=True)
class SqlTypes:
    """A column's type in each database family."""

    postgres: str
    sqlite: str
    generic: str

    def of(self, family: Family) -> str:
        return {"postgres": self.postgres, "sqlite": self.sqlite, "generic": self.generic}[family]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the result row: its types everywhere and what it means."""

    name: str
    arrow: pa.DataType
    sql: SqlTypes
    source: Source
    meaning: str
    nullable: bool = True


_TEXT = SqlTypes("TEXT", "TEXT", "TEXT")
_ID = SqlTypes("TEXT", "TEXT", "VARCHAR(512)")  # keys: portable databases index bounded text only
_SHORT = SqlTypes("TEXT", "TEXT", "VARCHAR(255)")
_INT = SqlTypes("INTEGER", "INTEGER", "INTEGER")
_BIGINT = SqlTypes("BIGINT", "INTEGER", "BIGINT")
_FLOAT = SqlTypes("DOUBLE PRECISION", "REAL", "DOUBLE PRECISION")
_JSON = SqlTypes("JSONB", "TEXT", "TEXT")  # JSON text outside PostgreSQL
_VECTOR = SqlTypes("REAL[]", "TEXT", "TEXT")  # a JSON array outside PostgreSQL
_TIME = SqlTypes("TIMESTAMPTZ", "TEXT", "TIMESTAMP")
_BOOL = SqlTypes("BOOLEAN", "INTEGER", "BOOLEAN")  # ISO 8601 text on SQLite; UTC everywhere

# Parquet has no second-precision timestamps: rows carry epoch seconds, columns hold milliseconds.
UTC_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_STRING, _INT32, _INT64 = pa.string(), pa.int32(), pa.int64()

RESULT_COLUMNS: tuple[Column, ...] = (
    Column("job_id", _STRING, _SHORT, "batch", "the job (`dag_id__run_id` by default)", nullable=False),
    Column("shard", _INT32, _INT, "request", "the input shard the request was built into, retries too", nullable=False),
    Column("batch_id", _STRING, _SHORT, "batch", "the batch whose answer this row holds", nullable=False),
    Column("custom_id", _STRING, _ID, "request", "the request's id, unique within the job", nullable=False),
    Column("record_key", _STRING, _ID, "custom_id", "the record's `key_field` value, as text", nullable=False),
    Column("status", _STRING, _SHORT, "request", " / ".join(f"`{s}`" for s in RESULT_STATUSES), nullable=False),
    Column("attempt", _INT32, _INT, "batch", "1 for the first batch, 2 and up for retries", nullable=False),
    Column("http_status", _INT32, _INT, "request", "`response.status_code` (null: never answered)"),
    Column(
        "error_code",
        _STRING,
        _SHORT,
        "request",
        "API error code or type, or `batch_expired`, `request_timeout`, `invalid_json`…",
    ),
    Column("error_message", _STRING, _TEXT, "request", "the service's message"),
    Column("model", _STRING, _SHORT, "request", "the model that answered"),
    Column(
        "content",
        _STRING,
        _TEXT,
        "request",
        "the text answer (also the raw text of invalid JSON, or of a body of an unknown shape)",
    ),
    Column("refusal", _STRING, _TEXT, "request", "the model's refusal, if it refused"),
    Column("finish_reason", _STRING, _SHORT, "request", "`stop`, `length`, `content_filter`… (responses: status)"),
    Column(
        "parsed",
        _STRING,
        _JSON,
        "request",
        "JSON text: the parsed answer when a `json_schema`/`json_object` format was asked; moderation results",
    ),
    Column("embedding", pa.list_(pa.float32()), _VECTOR, "request", "the embedding vector (base64 answers decoded)"),
    Column("input_tokens", _INT64, _BIGINT, "request", "reported input tokens (0 when not answered)", nullable=False),
    Column("cached_tokens", _INT64, _BIGINT, "request", "of which read from the prompt cache", nullable=False),
    Column("output_tokens", _INT64, _BIGINT, "request", "reported output tokens", nullable=False),
    Column("reasoning_tokens", _INT64, _BIGINT, "request", "of which reasoning tokens", nullable=False),
    Column("cost_usd", pa.float64(), _FLOAT, "request", "usage at Batch prices (null: model not in the price table)"),
    Column("request_id", _STRING, _SHORT, "request", "the service's request id"),
    Column("responded_at", UTC_TIMESTAMP, _TIME, "request", "when the service answered (second precision)"),
    Column("batch_created_at", UTC_TIMESTAMP, _TIME, "batch", "when the batch was created"),
    Column("batch_ended_at", UTC_TIMESTAMP, _TIME, "batch", "when the batch completed (null for expired/cancelled)"),
    Column("collected_at", UTC_TIMESTAMP, _TIME, "batch", "when the row was reconciled", nullable=False),
    Column(
        "cached",
        pa.bool_(),
        _BOOL,
        "batch",
        "true: the answer came from the answer cache (`cost_usd` 0: this run paid nothing; "
        "batch and request ids are the original's)",
        nullable=False,
    ),
)

RESULT_FIELDS: tuple[str, ...] = tuple(column.name for column in RESULT_COLUMNS)
# The values that differ from request to request, in column order: what the reconciler produces.
VALUE_FIELDS: tuple[str, ...] = tuple(column.name for column in RESULT_COLUMNS if column.source == "request")
# The values shared by all the rows of one reconciliation (``Reconciler.batch_values``).
BATCH_FIELDS: tuple[str, ...] = tuple(column.name for column in RESULT_COLUMNS if column.source == "batch")
TOKEN_FIELDS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")

SCHEMA_VERSION = "1"
RESULT_SCHEMA = pa.schema(
    [pa.field(column.name, column.arrow, nullable=column.nullable) for column in RESULT_COLUMNS],
    metadata={"openai_batch.schema_version": SCHEMA_VERSION},
)
