from __future__ import annotations

import io
import os
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.build.sources import format_of, read_cursor, read_records
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError


def test_jsonl_records_skip_blank_lines_and_name_a_bad_line():
    handle = io.BytesIO(b'{"id": 1}\n\n{"id": 2}\n')
    assert list(read_records(handle, "in.jsonl")) == [{"id": 1}, {"id": 2}]
    with pytest.raises(OpenAIBatchInputError, match=r"^in\.jsonl:2: not JSON"):
        list(read_records(io.BytesIO(b'{"id": 1}\n{oops\n'), "in.jsonl"))
    with pytest.raises(OpenAIBatchInputError, match=r"^in\.jsonl:1: a record must be a JSON object"):
        list(read_records(io.BytesIO(b"[1]\n"), "in.jsonl"))


def test_csv_records_are_dicts_of_strings_and_a_bom_is_dropped():
    handle = io.BytesIO('\ufeffid,text\n1,héllo\n2,"a, b"\n'.encode())
    assert list(read_records(handle, "in.csv")) == [{"id": "1", "text": "héllo"}, {"id": "2", "text": "a, b"}]


class CountingReader(io.BytesIO):
    """Counts the bytes read, so a test can see how much of a file was needed."""

    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        self.read_bytes += len(data)
        return data

    def readinto(self, buffer):
        count = super().readinto(buffer)
        self.read_bytes += count
        return count


def test_parquet_records_stream_a_batch_at_a_time():
    rows = 20_000
    table = pa.table({"id": list(range(rows)), "text": [os.urandom(40).hex() for _ in range(rows)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=1_000)
    handle = CountingReader(buffer.getvalue())
    records = read_records(handle, "s3://bucket/in.parquet", batch_rows=500)
    first = next(records)
    assert first["id"] == 0
    assert handle.read_bytes < len(buffer.getvalue()) / 5  # the footer and the first row group, not the file
    assert sum(1 for _ in records) == rows - 1


def test_a_file_that_is_not_parquet_says_so():
    with pytest.raises(OpenAIBatchInputError, match=r"in\.parquet: not a Parquet file"):
        list(read_records(io.BytesIO(b"id,text\n"), "in.parquet"))


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("s3://b/k/a.NDJSON", "jsonl"),
        ("a.csv", "csv"),
        ("x/a.parquet", "parquet"),
        ("a.pq", "parquet"),
    ],
)
def test_format_comes_from_the_extension(path, fmt):
    assert format_of(path) == fmt


def test_an_unknown_extension_asks_for_the_format():
    with pytest.raises(OpenAIBatchInputError, match="records_format="):
        format_of("s3://bucket.v2/data")


def test_cursor_rows_become_dicts_fetched_a_batch_at_a_time():
    connection = sqlite3.connect(":memory:")
    connection.execute("create table t (id integer, text text)")
    connection.executemany("insert into t values (?, ?)", [(i, f"t{i}") for i in range(25)])
    fetched: list[int] = []

    class Recording:
        def __init__(self, cursor):
            self.cursor = cursor

        @property
        def description(self):
            return self.cursor.description

        def fetchmany(self, size):
            rows = self.cursor.fetchmany(size)
            fetched.append(len(rows))
            return rows

    rows = list(read_cursor(Recording(connection.execute("select id, text from t order by id")), batch_rows=10))
    assert rows[0] == {"id": 0, "text": "t0"} and len(rows) == 25
    assert fetched == [10, 10, 5, 0]


def test_an_empty_result_gives_no_records_and_mapping_rows_are_kept():
    connection = sqlite3.connect(":memory:")
    connection.row_factory = sqlite3.Row
    assert list(read_cursor(connection.execute("select 1 as a where 0"))) == []
    connection.row_factory = lambda cursor, row: {d[0]: v for d, v in zip(cursor.description, row, strict=True)}
    assert list(read_cursor(connection.execute("select 1 as a"))) == [{"a": 1}]


def test_gzipped_jsonl_and_csv_are_read_and_their_format_comes_from_the_inner_extension():
    import gzip

    assert format_of("s3://b/part-0.jsonl.gz") == "jsonl"
    records = read_records(io.BytesIO(gzip.compress(b'{"id": 1}\n{"id": 2}\n')), "in.jsonl.gz")
    assert list(records) == [{"id": 1}, {"id": 2}]
    assert list(read_records(io.BytesIO(gzip.compress(b"id\n7\n")), "in.CSV.GZ")) == [{"id": "7"}]
    with pytest.raises(OpenAIBatchInputError, match="do not gzip it"):
        list(read_records(io.BytesIO(b""), "in.parquet.gz"))
