"""The build steps without Airflow: write, fail fast on a bad body, validate across shards, estimate."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from airflow_provider_openai_batch.core.build.building import (
    estimate_shards,
    local_reader,
    validate_shards,
    write_requests,
    write_requests_cached,
)
from airflow_provider_openai_batch.core.build.requests import RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.cache.keys import k64s
from airflow_provider_openai_batch.core.cache.lookup import CacheLookup
from airflow_provider_openai_batch.core.cache.store import ENTRY_SCHEMA, EntryWriter, LocalParts
from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.shards import ShardWriter
from airflow_provider_openai_batch.core.validate.validation import BatchInputError


def opener(root: Path):
    def open_shard(name: str):
        path = root / name
        return str(path), path.open("wb")

    return open_shard


def template(**body) -> RequestTemplate:
    return RequestTemplate(
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=({"role": "user", "content": "{{ text }}"},),
        body={"max_completion_tokens": 7, **body},
    )


RECORDS = [{"id": i, "text": f"text number {i}"} for i in range(1_000)]


def test_a_bad_body_fails_after_the_first_chunk_not_after_every_record(tmp_path):
    consumed = []

    def records():
        for record in RECORDS:
            consumed.append(record)
            yield record

    writer = ShardWriter(opener(tmp_path), "job")
    with pytest.raises(BatchInputError) as failure:
        write_requests(records(), RequestBuilder(template(temperature="hot"), "id"), writer)
    assert str(failure.value).splitlines()[1] == (
        f"{tmp_path}/job-shard-00000.jsonl:1: invalid body for /v1/chat/completions: "
        "expected `float | null`, got `str` at body.temperature"
    )
    assert len(consumed) < len(RECORDS)


def test_validation_reads_every_shard_back_and_names_each_line(tmp_path):
    writer = ShardWriter(opener(tmp_path), "job", max_requests=400)
    shards = write_requests(RECORDS, RequestBuilder(template(), "id"), writer)
    assert validate_shards(shards, local_reader).ok
    last = Path(shards[-1].path)
    last.write_bytes(last.read_bytes() + b'{"custom_id": "0"}\n')
    report = validate_shards(shards, local_reader)
    assert [str(p) for p in report.problems] == [
        f"{last}:201: missing top-level key 'method'",
        f"{last}:201: missing top-level key 'url'",
        f"{last}:201: missing top-level key 'body'",
        f"{last}:201: duplicate custom_id '0'; custom_ids must be unique across the job",
    ]


def test_shard_estimates_add_up_to_the_job_estimate(tmp_path):
    builder = RequestBuilder(template(), "id", token_estimate="exact")
    shards = write_requests(RECORDS, builder, ShardWriter(opener(tmp_path), "job", max_requests=300))
    priced, job = estimate_shards(shards, builder, PriceTable.load())
    assert [s.max_output_tokens for s in priced] == [2_100, 2_100, 2_100, 700]
    assert job.total.requests == 1_000 and job.total.max_output_tokens == 7_000
    assert job.total.input_tokens == sum(s.input_tokens for s in priced)
    assert job.total.cost_usd == pytest.approx(sum(s.cost_usd for s in priced))
    assert job.method == "exact" and job.exact_strings == 1_000


def test_without_token_estimates_there_is_no_job_estimate(tmp_path):
    builder = RequestBuilder(template(), "id")
    shards = write_requests(RECORDS[:3], builder, ShardWriter(opener(tmp_path), "job"))
    priced, job = estimate_shards(shards, builder, PriceTable.load())
    assert job.total is None and priced[0].cost_usd is None
    assert job.describe() == "no token estimate (token estimate off)"


def test_a_repeated_key_further_back_than_the_builders_window_fails_validation_naming_the_line(tmp_path, monkeypatch):
    # The builder holds a window of ids (here 100) so memory does not grow with the job; a key repeated
    # 500 records later passes it, and the validation of the written shards finds it before any upload.
    records = [*RECORDS[:600], {"id": 3, "text": "again"}]
    writer = ShardWriter(opener(tmp_path), "job", max_requests=400)
    shards = write_requests(records, RequestBuilder(template(), "id", id_window=100), writer)
    report = validate_shards(shards, local_reader, id_window=100, id_flush_rows=64)
    assert [str(p) for p in report.problems] == [
        f"{shards[1].path}:201: duplicate custom_id '3'; custom_ids must be unique across the job"
    ]


# Two per-record strings, one with a newline (the spill splits on raw newlines; JSON escapes them).
TWO_SLOTS = RequestTemplate(
    endpoint="/v1/chat/completions",
    model="gpt-4o-mini",
    messages=({"role": "system", "content": "Rate review {{ id }}"}, {"role": "user", "content": "{{ text }}"}),
    body={"max_completion_tokens": 7, "temperature": 0},
)
TEXTS = [{"id": i, "text": f"text\nnumber {i} ü"} for i in range(1_000)]


def cache_of(records, root: Path) -> LocalParts:
    """A cache answering ``records``, their keys made by the builder the build uses."""
    parts = LocalParts(str(root))
    writer = EntryWriter(parts)
    for chunk in RequestBuilder(TWO_SLOTS, "id", answer_keys=True).chunks(records):
        count = len(chunk.ids)
        given = {
            "k64": pa.array(k64s(chunk.keys), pa.int64()),
            "key": pa.array(chunk.keys, pa.binary(32)),
            "cached_at": pa.array([1_700_000_000_000] * count, pa.int64()),
            "content": pa.array([f"answer to {i}" for i in chunk.ids]),
        }
        columns = [given.get(f.name, pa.nulls(count, f.type)).cast(f.type) for f in ENTRY_SCHEMA]
        writer.add(pa.RecordBatch.from_arrays(columns, schema=ENTRY_SCHEMA))
    writer.commit()
    return parts


@pytest.mark.parametrize("spill_rows", [1, 300, 16_384])
@pytest.mark.parametrize("tokens", [None, "exact"])
def test_a_cached_build_writes_exactly_the_unanswered_requests_in_record_order(tmp_path, spill_rows, tokens):
    # Answered: two in three records, and every record of the second chunk (256-511), so the spill
    # has batches answered in part, batches answered whole (skipped) and, with spill_rows=1, one per chunk.
    answered = [r for r in TEXTS if r["id"] % 3 or 256 <= r["id"] < 512]
    sent = [r for r in TEXTS if r not in answered]
    parts = cache_of(answered, tmp_path / "cache")
    builder = RequestBuilder(TWO_SLOTS, "id", token_estimate=tokens, answer_keys=True)
    hits: list[pa.Table] = []
    (tmp_path / "cached").mkdir()
    shards, found = write_requests_cached(
        TEXTS,
        builder,
        ShardWriter(opener(tmp_path / "cached"), "job", max_requests=100),
        CacheLookup(parts, round_keys=200, flush_rows=64),
        hits.append,
        spill_rows=spill_rows,
    )
    (tmp_path / "plain").mkdir()
    expected = write_requests(
        sent,
        RequestBuilder(TWO_SLOTS, "id", token_estimate=tokens),
        ShardWriter(opener(tmp_path / "plain"), "job", max_requests=100),
    )
    assert [Path(s.path).read_bytes() for s in shards] == [Path(s.path).read_bytes() for s in expected]
    assert [(s.requests, s.input_tokens, s.first_custom_id, s.last_custom_id) for s in shards] == [
        (s.requests, s.input_tokens, s.first_custom_id, s.last_custom_id) for s in expected
    ]
    rows = pa.concat_tables(hits).sort_by("position").to_pylist()
    assert [(row["position"], row["custom_id"], row["content"]) for row in rows] == [
        (r["id"], str(r["id"]), f"answer to {r['id']}") for r in answered
    ]
    assert found.requests == len(answered)
