"""The build task with an answer cache: what it looks up, what it leaves out, when it refuses."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.build.requests import RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.cache.keys import k64
from airflow_provider_openai_batch.core.cache.store import ENTRY_SCHEMA, CacheError, EntryWriter, LocalParts
from tests.unit.operators.test_build import MESSAGES, build, local

BODY = {"temperature": 0, "max_tokens": 3}


def records(n: int) -> list[dict]:
    return [{"id": f"r{i}", "text": f"text {i}"} for i in range(n)]


def cache_answers(folder, answered: list[dict], body=BODY) -> None:
    """A cache holding an answer for each of ``answered``, keyed as the build keys them."""
    template = RequestTemplate(endpoint="/v1/chat/completions", model="gpt-4o-mini", messages=MESSAGES, body=body)
    writer = EntryWriter(LocalParts(str(folder)))
    for chunk in RequestBuilder(template, "id", answer_keys=True).chunks(answered):
        count = len(chunk.ids)
        given = {
            "k64": pa.array([k64(key) for key in chunk.keys or []], pa.int64()),
            "key": pa.array(chunk.keys, pa.binary(32)),
            "cached_at": pa.array([int(time.time() * 1000)] * count, pa.int64()),
            "content": pa.array([f"answer to {i}" for i in chunk.ids]),
            "cost_usd": pa.array([0.25] * count),
        }
        columns = [given.get(f.name, pa.nulls(count, f.type)).cast(f.type) for f in ENTRY_SCHEMA]
        writer.add(pa.RecordBatch.from_arrays(columns, schema=ENTRY_SCHEMA))
    writer.commit()


def test_cached_requests_are_left_out_of_the_shards_and_counted(tmp_path):
    cache_answers(tmp_path / "cache", records(10)[2:8])
    shards, pushed = build(tmp_path / "work", records(10), body=BODY, cache=str(tmp_path / "cache"))
    lines = b"".join(local(s["path"]).read_bytes() for s in shards).splitlines()
    assert [line.split(b'"')[3].decode() for line in lines] == ["r0", "r1", "r8", "r9"]  # record order kept
    summary = pushed["summary"]
    assert (summary["requests"], summary["cached"], summary["saved_usd"]) == (4, 6, 1.5)
    assert summary["estimate"]["requests"] == 4
    assert (summary["estimate"]["cached_requests"], summary["estimate"]["cached_cost_usd"]) == (6, 1.5)
    hits = pq.read_table(tmp_path / "work" / summary["job_id"] / "cache" / "hits.parquet").to_pylist()
    assert sorted((h["custom_id"], h["content"]) for h in hits) == [(f"r{i}", f"answer to r{i}") for i in range(2, 8)]


def test_a_job_the_cache_answers_whole_hands_on_one_empty_shard(tmp_path):
    cache_answers(tmp_path / "cache", records(3))
    shards, pushed = build(tmp_path / "work", records(3), body=BODY, cache=str(tmp_path / "cache"))
    assert [s["requests"] for s in shards] == [0]
    assert pushed["summary"]["cached"] == 3


def test_refresh_sends_everything(tmp_path):
    cache_answers(tmp_path / "cache", records(3))
    shards, _ = build(tmp_path / "work", records(3), body=BODY, cache=str(tmp_path / "cache"), cache_mode="refresh")
    assert sum(s["requests"] for s in shards) == 3


def test_sampling_settings_leave_the_cache_alone_unless_asked_with_a_log_line(tmp_path, capfd):
    sampled = {"temperature": 0.7}
    cache_answers(tmp_path / "cache", records(3), body=sampled)
    shards, _ = build(tmp_path / "a", records(3), body=sampled, cache=str(tmp_path / "cache"))
    assert sum(s["requests"] for s in shards) == 3
    logged = capfd.readouterr().out
    assert "temperature=0.7 without a seed" in logged and "cache_nondeterministic=True" in logged
    shards, _ = build(
        tmp_path / "b", records(3), body=sampled, cache=str(tmp_path / "cache"), cache_nondeterministic=True
    )
    assert [s["requests"] for s in shards] == [0]
    assert "Answer cache used although temperature=0.7" in capfd.readouterr().out


def test_an_unreadable_cache_fails_the_build_naming_the_part(tmp_path):
    cache_answers(tmp_path / "cache", records(3))
    (tmp_path / "cache" / "0000000000001-corrupt.parquet").write_bytes(b"PAR1 cut short")
    with pytest.raises(CacheError, match="0000000000001-corrupt"):
        build(tmp_path / "work", records(3), body=BODY, cache=str(tmp_path / "cache"))


def test_cache_mode_is_checked_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(ValueError, match="cache_mode"):
        build(tmp_path, records(1), cache=str(tmp_path), cache_mode="sometimes")
