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
import zlib
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final, Literal, get_args

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_LINE_BYTES
from airflow_provider_openai_batch.core.line_blocks import capped_lines
from airflow_provider_openai_batch.core.validate.bodies.checks import utf8_problem
from airflow_provider_openai_batch.core.validate.validation import LINE_TOO_LONG, NESTED_TOO_DEEP

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
            "or name the format (records_format=)",
            path=path,
        )
    return fmt  # type: ignore[return-value]


def read_records(
    handle: IO[bytes], path: str, fmt: str | None = None, *, batch_rows: int = BATCH_ROWS
) -> Iterator[dict[str, Any]]:
    """
    Yield one dict per record; a bad record fails with ``path:line``. ``.gz`` files are unzipped.

    Decompression streams a block at a time and a JSONL line over ``MAX_LINE_BYTES`` is refused
    before it is decoded, so a small file that inflates to a huge line cannot exhaust memory.
    Parquet is read ``batch_rows`` rows at a time.
    """
    fmt = fmt or format_of(path)
    zipped = path.lower().endswith(".gz")
    if zipped:
        if fmt == "parquet":
            raise OpenAIBatchInputError(f"{path}: Parquet compresses inside the file; do not gzip it", path=path)
        handle = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
    if fmt not in FORMATS:
        raise OpenAIBatchInputError(f"{path}: unsupported record format {fmt!r}; use one of {FORMATS}", path=path)
    if fmt == "parquet":
        records = _parquet(handle, path, batch_rows)
    else:
        records = {"jsonl": _jsonl, "csv": _csv}[fmt](handle, path)
    try:
        yield from records
    except (gzip.BadGzipFile, zlib.error) as err:
        raise OpenAIBatchInputError(f"{path}: not a valid gzip file ({err})", path=path) from None
    except EOFError:
        raise OpenAIBatchInputError(
            f"{path}: the gzip file is truncated (it ends before its end marker)", path=path
        ) from None


def _jsonl(handle: IO[bytes], path: str) -> Iterator[dict[str, Any]]:
    decode = msgspec.json.Decoder().decode
    for number, line in enumerate(capped_lines(handle), start=1):
        if len(line) > MAX_LINE_BYTES:
            raise OpenAIBatchInputError(f"{path}:{number}: record {LINE_TOO_LONG}", path=path)
        if not line.strip():
            continue
        try:
            record = decode(line)
        except msgspec.DecodeError as err:
            raise OpenAIBatchInputError(f"{path}:{number}: not JSON ({err})", path=path) from None
        except UnicodeDecodeError:
            raise OpenAIBatchInputError(
                f"{path}:{number}: {utf8_problem(line) or 'not valid UTF-8'}", path=path
            ) from None
        except RecursionError:
            raise OpenAIBatchInputError(f"{path}:{number}: {NESTED_TOO_DEEP}", path=path) from None
        if not isinstance(record, dict):
            raise OpenAIBatchInputError(f"{path}:{number}: a record must be a JSON object", path=path)
        yield record


def _csv(handle: IO[bytes], path: str) -> Iterator[dict[str, Any]]:
    """CSV rows; a field over csv's own limit (131,072 characters) or bad UTF-8 names its line."""
    reader = csv.DictReader(codecs.getreader("utf-8-sig")(handle))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise OpenAIBatchInputError(
                f"{path}:{reader.line_num + 1}: not a readable CSV row ({err})", path=path
            ) from None
        except UnicodeDecodeError:
            raise OpenAIBatchInputError(
                f"{path}: not valid UTF-8 (near line {reader.line_num + 1}); save the file as UTF-8", path=path
            ) from None
        yield row


def _parquet(handle: IO[bytes], path: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    """Read one record batch at a time (the file must be seekable, as object stores are).

    ``pre_buffer=False``: pyarrow's default pre-buffering fetches every row group up front,
    which would hold the whole file in memory (measured: all of it read before the first record).
    """
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(handle, pre_buffer=False)
    except (pyarrow.ArrowInvalid, OSError) as err:
        raise OpenAIBatchInputError(f"{path}: not a Parquet file ({err})", path=path) from None
    for batch in parquet.iter_batches(batch_size=batch_rows):
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
