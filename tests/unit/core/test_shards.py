from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.shards import Manifest, ShardWriter


def local_opener(root: Path):
    def open_shard(name: str):
        path = root / name
        return str(path), path.open("wb")

    return open_shard


def lines(n: int, size: int = 10):
    for i in range(n):
        yield f"id-{i}", (f'{{"i":{i}}}'.ljust(size - 1) + "\n").encode()


def test_splits_by_request_count(tmp_path):
    shards = ShardWriter(local_opener(tmp_path), "job", max_requests=4).write_all(lines(10))
    assert [s.requests for s in shards] == [4, 4, 2]
    assert [s.first_custom_id for s in shards] == ["id-0", "id-4", "id-8"]
    assert [s.last_custom_id for s in shards] == ["id-3", "id-7", "id-9"]


def test_splits_by_bytes_without_crossing_the_limit(tmp_path):
    shards = ShardWriter(local_opener(tmp_path), "job", max_bytes=25).write_all(lines(5, size=10))
    assert [s.requests for s in shards] == [2, 2, 1]
    assert all(s.bytes <= 25 for s in shards)


def test_shard_fingerprint_matches_the_file_written(tmp_path):
    (shard,) = ShardWriter(local_opener(tmp_path), "job").write_all(lines(3))
    data = Path(shard.path).read_bytes()
    assert shard.sha256 == hashlib.sha256(data).hexdigest()
    assert shard.bytes == len(data)
    assert data.count(b"\n") == shard.requests == 3


def test_a_single_request_over_the_byte_limit_is_an_error(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="'id-0' alone is 30 bytes"):
        ShardWriter(local_opener(tmp_path), "job", max_bytes=20).write_all(lines(1, size=30))


@pytest.mark.parametrize("kwargs", [{"max_requests": 50_001}, {"max_requests": 0}, {"max_bytes": 201 * 1024 * 1024}])
def test_limits_above_the_api_or_below_one_are_refused(tmp_path, kwargs):
    with pytest.raises(OpenAIBatchInputError):
        ShardWriter(local_opener(tmp_path), "job", **kwargs)


def test_manifest_round_trips(tmp_path):
    shards = ShardWriter(local_opener(tmp_path), "job", max_requests=2).write_all(lines(3))
    manifest = Manifest("job", "/v1/embeddings", "text-embedding-3-small", "id", tuple(shards), extra={"a": 1})
    again = Manifest.from_json(manifest.to_json())
    assert again == manifest
    assert again.requests == 3
