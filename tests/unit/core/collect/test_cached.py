"""Cached answers become rows; only succeeded fresh answers become cache entries."""

from __future__ import annotations

import msgspec
import pyarrow as pa

from airflow_provider_openai_batch.core.cache.keys import line_keys
from airflow_provider_openai_batch.core.cache.lookup import CacheLookup
from airflow_provider_openai_batch.core.cache.store import EntryWriter, LocalParts
from airflow_provider_openai_batch.core.collect.cached import AnswerTee, cached_rows
from airflow_provider_openai_batch.core.collect.result_columns import RESULT_SCHEMA
from tests.unit.core.collect.rows import ResultRow, rows_to_batch

STATUSES = ["succeeded", "failed", "expired", "invalid_output", "cancelled", "missing", "succeeded"]


def request(custom_id: str) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": custom_id}], "temperature": 0}
    return msgspec.json.encode({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


class Stage:
    def __init__(self) -> None:
        self.rows = 0

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows


def test_only_succeeded_answers_are_cached_and_come_back_as_cached_rows(tmp_path):
    ids = [f"r{i}" for i in range(len(STATUSES))]
    rows = [
        ResultRow(job_id="j1", shard=0, batch_id="b1", custom_id=c, record_key=c, status=s, content=f"answer {c}",
                  input_tokens=5, cost_usd=0.25, request_id=f"req-{c}", collected_at=1)
        for c, s in zip(ids, STATUSES, strict=True)
    ]  # fmt: skip
    parts, stage = LocalParts(str(tmp_path / "cache")), Stage()
    tee = AnswerTee(stage, EntryWriter(parts), "/v1/chat/completions")
    tee.write_batch(rows_to_batch(rows))
    tee.run_done([request(c) for c in ids])
    assert tee.entries.commit() is not None
    assert stage.rows == len(ids)  # every row still reaches the stage

    lookup = CacheLookup(parts)
    lines = [request(c) for c in ids]
    lookup.add(line_keys(lines), [f"next-{c}" for c in ids], 0)
    hits = list(lookup.hits())
    batches = list(cached_rows((b for t in hits for b in t.to_batches()), "j2", collected_at=2))
    assert all(batch.schema == RESULT_SCHEMA for batch in batches)
    found = sorted((r for batch in batches for r in batch.to_pylist()), key=lambda r: r["custom_id"])
    assert [r["custom_id"] for r in found] == ["next-r0", "next-r6"]
    first = found[0]
    assert (first["job_id"], first["status"], first["cached"], first["cost_usd"]) == ("j2", "succeeded", True, 0.0)
    assert (first["batch_id"], first["request_id"], first["content"], first["input_tokens"]) == (
        "b1",
        "req-r0",
        "answer r0",
        5,
    )
