"""Whole result rows, one at a time, for tests.

The reconciler streams value columns straight into Arrow batches and never builds a row object;
tests that want to look at one request's outcome use these, derived from the one column table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import pyarrow as pa

from airflow_provider_openai_batch.core.collect.result_columns import (
    RESULT_COLUMNS,
    RESULT_SCHEMA,
    UTC_TIMESTAMP,
    VALUE_FIELDS,
)
from airflow_provider_openai_batch.core.collect.result_table import count_batch
from airflow_provider_openai_batch.core.collect.results import Reconciler

# Defaults of the columns that cannot be null; the nullable ones default to None, and the first
# six (the row's identity and status) have none.
_DEFAULTS = {"attempt": 1, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0}
_DEFAULTS["collected_at"] = 0
_DEFAULTS["cached"] = False


def _field(column: Any) -> tuple[str, Any] | tuple[str, Any, Any]:
    if column.nullable:
        return (column.name, Any, None)
    if column.name in _DEFAULTS:
        return (column.name, Any, _DEFAULTS[column.name])
    return (column.name, Any)


ResultRow = msgspec.defstruct(
    "ResultRow",
    [_field(c) for c in RESULT_COLUMNS],
    frozen=True,
    namespace={"to_dict": lambda self: msgspec.structs.asdict(self)},
)


def reconciled_rows(reconciler: Reconciler, *line_sources: Iterable[bytes]) -> list[Any]:
    """
    Rows for the answered requests in line order, then for the unanswered ones; counted into
    ``reconciler.counts`` as the reconciler's own batches are.
    """
    shared = reconciler.batch_values()
    rows = []
    for values in reconciler.values(*line_sources):
        request = dict(zip(VALUE_FIELDS, values, strict=True))
        rows.append(ResultRow(**request, **shared, record_key=request["custom_id"]))
    if rows:
        count_batch(reconciler.counts, rows_to_batch(rows))
    return rows


# Rows carry epoch seconds; the schema's timestamps are milliseconds.
_ROW_SCHEMA = pa.schema(
    [f.with_type(pa.timestamp("s", tz="UTC")) if f.type == UTC_TIMESTAMP else f for f in RESULT_SCHEMA]
)


def rows_to_batch(rows: Iterable[Any]) -> pa.RecordBatch:
    """A record batch built row by row: an independent path to compare the reconciler's batches with."""
    data = [msgspec.structs.asdict(row) for row in rows]
    for row in data:
        if row["parsed"] is not None:
            row["parsed"] = msgspec.json.encode(row["parsed"]).decode()
    return pa.RecordBatch.from_pylist(data, schema=_ROW_SCHEMA).cast(RESULT_SCHEMA)
