"""The store and the lookup on a local directory: parts written whole, looked up without loading the cache."""

from __future__ import annotations

import os
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_openai_batch.core.cache.keys import k64
from airflow_provider_openai_batch.core.cache.lookup import CacheLookup
from airflow_provider_openai_batch.core.cache.store import (
    ENTRY_SCHEMA,
    CacheError,
    EntryWriter,
    LocalParts,
    cache_stats,
    evict,
)


def key(i: int) -> bytes:
    import hashlib

    return hashlib.sha256(str(i).encode()).digest()


def entries(ids: range, content: str = "a", model: str = "m", age: float = 0.0) -> pa.RecordBatch:
    count = len(ids)
    columns = {field.name: pa.nulls(count, field.type) for field in ENTRY_SCHEMA}
    columns["k64"] = pa.array([k64(key(i)) for i in ids], pa.int64())
    columns["key"] = pa.array([key(i) for i in ids], pa.binary(32))
    columns["cached_at"] = pa.array([int((time.time() - age) * 1000)] * count, pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    columns["content"] = pa.array([f"{content}{i}" for i in ids])
    columns["model"] = pa.array([model] * count)
    columns["cost_usd"] = pa.array([0.5] * count)
    return pa.RecordBatch.from_arrays([columns[f.name] for f in ENTRY_SCHEMA], schema=ENTRY_SCHEMA)


def write(parts: LocalParts, *batches: pa.RecordBatch) -> str | None:
    writer = EntryWriter(parts)
    for batch in batches:
        writer.add(batch)
    return writer.commit()


def look(parts: LocalParts, ids: range, **options) -> dict[str, str]:
    lookup = CacheLookup(parts, **options)
    lookup.add([key(i) for i in ids], [f"r{i}" for i in ids], 0)
    found = {}
    for table in lookup.hits():
        for row in table.to_pylist():
            found[row["custom_id"]] = row["content"]
    return found


def test_a_part_is_sorted_by_key_and_lookups_find_exactly_the_cached_requests(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(0, 3000)), entries(range(3000, 5000)))
    (name,) = parts.names()
    k64s = pq.read_table(tmp_path / name, columns=["k64"]).column("k64").to_pylist()
    assert k64s == sorted(k64s)
    found = look(parts, range(4000, 6000))
    assert found == {f"r{i}": f"a{i}" for i in range(4000, 5000)}


def test_lookups_read_a_round_at_a_time_and_still_find_everything(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(2000)))
    assert len(look(parts, range(1000, 3000), round_keys=100, flush_rows=64)) == 1000


def test_the_newest_answer_wins_and_max_age_leaves_old_ones_out(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(10), content="old", age=3600))
    write(parts, entries(range(5), content="new"))
    found = look(parts, range(10))
    assert found == {**{f"r{i}": f"old{i}" for i in range(5, 10)}, **{f"r{i}": f"new{i}" for i in range(5)}}
    assert set(look(parts, range(10), max_age=60)) == {f"r{i}" for i in range(5)}


def test_a_shared_k64_with_another_key_is_not_a_match(tmp_path):
    parts = LocalParts(str(tmp_path))
    batch = entries(range(1))
    forged = batch.set_column(1, "key", pa.array([key(99)], pa.binary(32)))  # k64 of 0, key of 99
    write(parts, forged)
    assert look(parts, range(1)) == {}


def test_two_writers_at_once_lose_nothing(tmp_path):
    parts = LocalParts(str(tmp_path))
    threads = [threading.Thread(target=write, args=(parts, entries(range(n, n + 500)))) for n in (0, 500)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(parts.names()) == 2
    assert len(look(parts, range(1000))) == 1000


def test_a_writer_killed_mid_write_leaves_no_part_and_readers_skip_its_temp_file(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(10)))

    def killed() -> None:
        with parts.open_write("0000000000001-abc.parquet") as handle:
            handle.write(b"PAR1 half a part")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed()
    (tmp_path / ".0000000000002-def.parquet.x.partial").write_bytes(b"PAR1 left by a killed process")
    assert len(parts.names()) == 1
    assert len(look(parts, range(10))) == 10


def test_an_unreadable_part_fails_the_lookup_naming_it(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(10)))
    (tmp_path / "0000000000001-broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(CacheError, match=r"0000000000001-broken\.parquet"):
        look(parts, range(10))


def test_evict_by_model_or_age_keeps_the_rest_and_stats_count_them(tmp_path):
    parts = LocalParts(str(tmp_path))
    write(parts, entries(range(10), model="a"), entries(range(10, 20), model="b", age=7200))
    write(parts, entries(range(20, 25), model="a"))
    stats = cache_stats(parts)
    assert (stats.entries, stats.by_model, stats.parts) == (25, {"a": 15, "b": 10}, 2)
    assert evict(parts, older_than=time.time() - 3600) == 10
    assert evict(parts, model="a") == 15
    assert cache_stats(parts).entries == 0 and parts.names() == []
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".partial")]
