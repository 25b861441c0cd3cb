"""Result rows as Arrow: the column-wise path equals the row path; Parquet round trip; column-wise counts."""

from __future__ import annotations

import io

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.collect.result_table import (
    RESULT_SCHEMA,
    BackgroundWriter,
    TableCounts,
    batch_writer,
    format_of,
    read_parquet,
    reconciled_batches,
    write_batches,
)
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, Reconciler
from airflow_provider_openai_batch.core.costs import PriceTable
from tests.unit.core.collect.rows import reconciled_rows, rows_to_batch
from tests.unit.core.collect.test_results import chat_line, error_line

enc = msgspec.json.encode
PRICES = PriceTable.load({"gpt-4o-mini": {"input": 1.0, "output": 2.0}})


def mixed_lines() -> list[bytes]:
    embedding = {"object": "list", "model": "e", "data": [{"embedding": [0.5, 0.25]}], "usage": {"prompt_tokens": 2}}
    return [
        chat_line("ok", '{"label": "pos"}'),
        chat_line("bad-json", "{oops"),
        chat_line("http-429", status=429),
        error_line("timeout", "request_timeout"),
        enc({"custom_id": "emb", "response": {"status_code": 200, "body": embedding}}),
        enc({"custom_id": "odd", "response": {"status_code": 200, "body": {"choices": 3}}}),
        chat_line("ok"),  # a duplicate: counted, not written
        b"{garbage",
    ]


IDS = ["ok", "bad-json", "http-429", "timeout", "emb", "odd", "never-answered"]


def reconciler() -> Reconciler:
    outcome = BatchOutcome("job", 2, "batch_9", "expired", attempt=2, expect_json=True, created_at=10, ended_at=None)
    return Reconciler(outcome, IDS, PRICES)


def test_the_column_wise_path_gives_the_same_table_as_the_row_path():
    rows_path = reconciler()
    expected = rows_to_batch(list(reconciled_rows(rows_path, mixed_lines())))
    batches_path = reconciler()
    batches_path.collected_at = rows_path.collected_at
    got = pa.Table.from_batches(list(reconciled_batches(batches_path, mixed_lines(), size=3)))
    assert got.schema.equals(RESULT_SCHEMA)
    assert got.to_pylist() == pa.Table.from_batches([expected]).to_pylist()
    assert [b.num_rows for b in reconciled_batches(reconciler(), mixed_lines(), size=3)] == [3, 3, 1]
    statuses = dict(zip(got.column("custom_id").to_pylist(), got.column("status").to_pylist(), strict=True))
    assert statuses == {
        "ok": "succeeded",
        "bad-json": "invalid_output",
        "http-429": "failed",
        "timeout": "failed",
        "emb": "succeeded",
        "odd": "invalid_output",
        "never-answered": "expired",
    }


def test_parquet_round_trip_keeps_types_and_values():
    batches = list(reconciled_batches(reconciler(), mixed_lines()))
    buffer = io.BytesIO()
    assert write_batches(buffer, batches) == len(IDS)
    buffer.seek(0)
    back = pa.Table.from_batches(list(read_parquet(buffer)))
    assert back.schema.equals(RESULT_SCHEMA, check_metadata=False)
    assert back.to_pylist() == pa.Table.from_batches(batches).to_pylist()
    row = back.filter(pa.compute.equal(back.column("custom_id"), "ok")).to_pylist()[0]
    assert row["parsed"] == '{"label":"pos"}' and row["batch_created_at"].timestamp() == 10


def test_a_file_of_many_row_groups_is_read_back_in_order_in_batches_of_at_most_the_size():
    batches = list(reconciled_batches(reconciler(), mixed_lines(), size=2))  # a row group per batch
    buffer = io.BytesIO()
    write_batches(buffer, batches)
    buffer.seek(0)
    assert pq.ParquetFile(buffer).num_row_groups == len(batches) > 2
    buffer.seek(0)
    back = list(read_parquet(buffer, size=1))
    assert [b.num_rows for b in back] == [1] * len(IDS)
    assert pa.Table.from_batches(back).to_pylist() == pa.Table.from_batches(batches).to_pylist()


def test_a_parquet_file_of_another_schema_is_refused():
    buffer = io.BytesIO()
    pq.write_table(pa.table({"x": [1]}), buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match="not a results file"):
        list(read_parquet(buffer))


def test_column_wise_counts_equal_the_reconcilers_counts():
    source = reconciler()
    counts = TableCounts()
    for batch in reconciled_batches(source, mixed_lines(), size=2):
        counts.add(batch)
    expected = source.counts.to_dict()
    for key in ("duplicate_lines", "unknown_custom_ids", "unparseable_lines"):
        expected.pop(key)
    assert counts.to_dict() == expected
    assert expected["requests"] == len(IDS) and expected["cost_usd"] > 0 and expected["unpriced_rows"] == 1


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("out.parquet", "parquet"), ("s3://b/x.PQ", "parquet"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl")],
)
def test_format_follows_the_extension(path, fmt):
    assert format_of(path) == fmt


def test_an_unknown_extension_is_refused():
    with pytest.raises(ValueError, match=r"\.parquet or \.jsonl"):
        format_of("results.csv")


def chat_lines(ids, model="gpt-4o-mini", content='{"label": "pos"}'):
    return [chat_line(i, content).replace(b"gpt-4o-mini", model.encode()) for i in ids]


def both_paths(ids, lines, *, expect_json=False, origins=None):
    def make():
        outcome = BatchOutcome("job", 0, "b", "completed", expect_json=expect_json, created_at=5, ended_at=9)
        return Reconciler(outcome, ids, PRICES, origins)

    by_rows = make()
    expected = pa.Table.from_batches([rows_to_batch(list(reconciled_rows(by_rows, lines)))])
    by_columns = make()
    by_columns.collected_at = by_rows.collected_at
    line_by_line = []
    original = by_columns._line_values
    by_columns._line_values = lambda raw: line_by_line.append(raw) or original(raw)
    got = pa.Table.from_batches(list(reconciled_batches(by_columns, lines, size=100)))
    return expected, got, by_rows.counts, by_columns.counts, line_by_line


def test_chunks_of_plain_chat_answers_take_the_column_path_and_give_the_same_rows():
    ids = [f"r{i}" for i in range(300)]
    lines = chat_lines(ids[:150]) + chat_lines(ids[150:], model="unpriced-model")
    expected, got, row_counts, column_counts, line_by_line = both_paths(ids, lines, expect_json=True)
    assert line_by_line == []
    assert got.to_pylist() == expected.to_pylist()
    assert column_counts.to_dict() == row_counts.to_dict()
    assert column_counts.to_dict()["unpriced_rows"] == 150 and column_counts.cost_usd > 0


def test_a_chunk_with_a_stray_line_falls_back_to_line_by_line_and_agrees():
    ids = [f"r{i}" for i in range(100)]
    lines = chat_lines(ids[:50]) + chat_lines(["r3", "ghost"]) + chat_lines(ids[50:])
    lines[10] = chat_line("r10", "{not json")
    expected, got, row_counts, column_counts, line_by_line = both_paths(ids, lines, expect_json=True)
    assert line_by_line  # the chunks holding the duplicate, the unknown id and the bad JSON
    assert got.to_pylist() == expected.to_pylist()
    assert column_counts.to_dict() == row_counts.to_dict()
    assert (column_counts.duplicate_lines, column_counts.unknown_custom_ids) == (1, 1)
    assert column_counts.by_status["invalid_output"] == 1


def test_a_retry_shard_keeps_each_rows_input_shard_on_the_column_path():
    ids = [f"r{i}" for i in range(200)]
    lines = chat_lines(ids[::-1])  # answers in reverse order, across the runs of origins
    expected, got, _, _, line_by_line = both_paths(ids, lines, origins=[(4, 120), (9, 80)])
    assert line_by_line == []
    assert got.to_pylist() == expected.to_pylist()
    shards = dict(zip(got.column("custom_id").to_pylist(), got.column("shard").to_pylist(), strict=True))
    assert {shards["r0"], shards["r119"]} == {4} and {shards["r120"], shards["r199"]} == {9}


def test_a_chunk_answering_one_id_twice_goes_line_by_line_and_counts_the_repeat():
    ids = [f"r{i}" for i in range(20)]
    lines = chat_lines([*ids[:5], "r2", *ids[5:]])  # the repeat sits inside one chunk
    expected, got, row_counts, column_counts, line_by_line = both_paths(ids, lines)
    assert len(line_by_line) == len(lines)
    assert got.to_pylist() == expected.to_pylist() and got.num_rows == 20
    assert column_counts.duplicate_lines == row_counts.duplicate_lines == 1


class Recording:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches, self.closed, self.fail_on = [], False, fail_on

    def write_batch(self, batch):
        if len(self.batches) == self.fail_on:
            raise OSError("disk full")
        self.batches.append(batch)

    def close(self):
        self.closed = True


def test_the_background_writer_writes_in_order_and_hands_back_the_writers_error():
    batch = rows_to_batch(list(reconciled_rows(reconciler(), mixed_lines())))
    ok = BackgroundWriter(Recording())
    for _ in range(5):
        ok.write_batch(batch)
    ok.close()
    assert len(ok._writer.batches) == 5 and ok._writer.closed
    failing = BackgroundWriter(Recording(fail_on=1))

    def write_all() -> None:
        for _ in range(10):
            failing.write_batch(batch)
        failing.close()

    with pytest.raises(OSError, match="disk full"):
        write_all()
    assert not failing._writer.closed


def test_an_aborted_background_writer_stops_without_closing_the_writer():
    recording = Recording()
    seen = []

    def fail_inside() -> None:
        with batch_writer(io.BytesIO()) as writer:
            writer._writer = recording
            seen.append(writer)
            raise RuntimeError("reconciliation failed")

    with pytest.raises(RuntimeError, match="reconciliation failed"):
        fail_inside()
    assert not recording.closed and not seen[0]._thread.is_alive()


def test_a_line_holding_two_objects_is_unparseable_not_two_answers():
    ids = [f"r{i}" for i in range(10)]
    lines = chat_lines(ids[:8])
    lines.append(chat_line("r8") + b"," + chat_line("r9"))
    expected, got, row_counts, column_counts, _ = both_paths(ids, lines)
    assert got.to_pylist() == expected.to_pylist()
    assert column_counts.unparseable_lines == 1 and column_counts.by_status["missing"] == 2
