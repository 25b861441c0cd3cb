"""Records from files, streamed: JSONL and CSV from any binary handle (local or object storage)."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

FORMATS = ("jsonl", "csv")


def format_of(path: str) -> str:
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    fmt = {"jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl", "csv": "csv"}.get(suffix)
    if fmt is None:
        raise OpenAIBatchInputError(f"{path}: cannot tell the record format from the extension; use .jsonl or .csv")
    return fmt


def read_records(handle: IO[bytes], path: str, fmt: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield one dict per record; a bad line fails with ``path:line``."""
    fmt = fmt or format_of(path)
    if fmt == "jsonl":
        yield from _jsonl(handle, path)
    elif fmt == "csv":
        yield from csv.DictReader(codecs.getreader("utf-8-sig")(handle))
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
