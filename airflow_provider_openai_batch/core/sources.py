"""Records, streamed: JSONL, CSV and Parquet from binary handles, and rows from a DB-API cursor.

Files come as handles so the same code reads a local file or any object store (the operator opens
them through ``ObjectStoragePath``). Every reader yields plain ``dict`` records, a batch of rows at a
time, so memory holds one batch whatever the number of records. Imports nothing from Airflow.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final, Literal, get_args

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

RecordFormat = Literal["jsonl", "csv", "parquet"]
FORMATS: Final = get_args(RecordFormat)
_SUFFIXES: Final = {
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
}
# Rows per batch read from Parquet or fetched from a cursor: a few MB at most.
BATCH_ROWS: Final = 10_000


def format_of(path: str) -> RecordFormat:
    """The record format named by the file's extension."""
    name = path.rsplit("/", 1)[-1].lower().removesuffix(".gz")
    suffix = name.rsplit(".", 1)[-1] if "." in name else ""
    fmt = _SUFFIXES.get(suffix)
    if fmt is None:
        raise OpenAIBatchInputError(
            f"{path}: cannot tell the record format from the extension; use .jsonl, .csv or .parquet, "
            "or name the format (records_format=)"
        )
    return fmt  # type: ignore[return-value]


def read_records(handle: IO[bytes], path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield one dict per record; a bad JSONL line fails with ``path:line``. ``.gz`` files are unzipped."""
    fmt = fmt or format_of(path)
    if path.lower().endswith(".gz"):
        if fmt == "parquet":
            raise OpenAIBatchInputError(f"{path}: Parquet compresses inside the file; do not gzip it")
        handle = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
    if fmt == "jsonl":
        yield from _jsonl(handle, path)
    elif fmt == "csv":
        yield from csv.DictReader(codecs.getreader("utf-8-sig")(handle))
    elif fmt == "parquet":
        yield from _parquet(handle, path)
    else:
        raise OpenAIBatchInputError(f"{path}: unsupported record format {fmt!r}; use one of {FORMATS}")


def _jsonl(handle: IO[bytes], path: str) -> Iterator[dict[str, Any]]:
    decode = msgspec.json.Decoder().decode
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = decode(line)
        except msgspec.DecodeError as err:
            raise OpenAIBatchInputError(f"{path}:{number}: not JSON ({err})") from None
        if not isinstance(record, dict):
            raise OpenAIBatchInputError(f"{path}:{number}: a record must be a JSON object")
        yield record


def _parquet(handle: IO[bytes], path: str) -> Iterator[dict[str, Any]]:
    """Read one record batch at a time (the file must be seekable, as object stores are).

    ``pre_buffer=False``: pyarrow's default pre-buffering fetches every row group up front,
    which would hold the whole file in memory (measured: all of it read before the first record).
    """
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle, pre_buffer=False)
    except (pyarrow.ArrowInvalid, OSError) as err:
        raise OpenAIBatchInputError(f"{path}: not a Parquet file ({err})") from None
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
        yield from batch.to_pylist()


def read_cursor(cursor: Any, batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """Rows of an executed DB-API cursor as dicts, ``fetchmany`` at a time.

    Column names are read after the first fetch: a server-side (named) psycopg2 cursor knows
    them only then. Rows that are already mappings (a dict row factory) are taken as they are.
    """
    rows = cursor.fetchmany(batch_rows)
    if not rows:
        return
    if cursor.description is None:
        raise OpenAIBatchInputError("the SQL statement returned no columns; it must be a query (SELECT ...)")
    columns = [str(column[0]) for column in cursor.description]
    while rows:
        if isinstance(rows[0], Mapping):
            yield from map(dict, rows)
        else:
            yield from map(dict, map(zip, itertools.repeat(columns), rows))
        rows = cursor.fetchmany(batch_rows)
