from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.shards import Manifest, ShardWriter
from tests.unit.core.shard_files import read_manifest, write_all


def local_opener(root: Path):
    def open_shard(name: str):
        path = root / name
        return str(path), path.open("wb")

    return open_shard


def lines(n: int, size: int = 10):
    for i in range(n):
        yield f"id-{i}", (f'{{"i":{i}}}'.ljust(size - 1) + "\n").encode()


def test_splits_by_request_count(tmp_path):
    shards = write_all(ShardWriter(local_opener(tmp_path), "job", max_requests=4), lines(10))
    assert [s.requests for s in shards] == [4, 4, 2]
    assert [s.first_custom_id for s in shards] == ["id-0", "id-4", "id-8"]
    assert [s.last_custom_id for s in shards] == ["id-3", "id-7", "id-9"]


def test_splits_by_bytes_without_crossing_the_limit(tmp_path):
    shards = write_all(ShardWriter(local_opener(tmp_path), "job", max_bytes=25), lines(5, size=10))
    assert [s.requests for s in shards] == [2, 2, 1]
    assert all(s.bytes <= 25 for s in shards)


def test_shard_fingerprint_matches_the_file_written(tmp_path):
    (shard,) = write_all(ShardWriter(local_opener(tmp_path), "job"), lines(3))
    data = Path(shard.path).read_bytes()
    assert shard.sha256 == hashlib.sha256(data).hexdigest()
    assert shard.bytes == len(data)
    assert data.count(b"\n") == shard.requests == 3


def test_a_single_request_over_the_byte_limit_is_an_error(tmp_path):
    with pytest.raises(OpenAIBatchInputError, match="'id-0' alone is 30 bytes"):
        write_all(ShardWriter(local_opener(tmp_path), "job", max_bytes=20), lines(1, size=30))


@pytest.mark.parametrize("kwargs", [{"max_requests": 50_001}, {"max_requests": 0}, {"max_bytes": 201 * 1024 * 1024}])
def test_limits_above_the_api_or_below_one_are_refused(tmp_path, kwargs):
    with pytest.raises(OpenAIBatchInputError):
        ShardWriter(local_opener(tmp_path), "job", **kwargs)


def test_manifest_round_trips(tmp_path):
    shards = write_all(ShardWriter(local_opener(tmp_path), "job", max_requests=2), lines(3))
    manifest = Manifest("job", "/v1/embeddings", "text-embedding-3-small", "id", tuple(shards), extra={"a": 1})
    again = read_manifest(manifest.to_json())
    assert again == manifest
    assert again.requests == 3


def chunked(n: int, size: int = 10, chunk: int = 7):
    items = list(lines(n, size))
    for start in range(0, n, chunk):
        part = items[start : start + chunk]
        yield [i for i, _ in part], [line for _, line in part]


@pytest.mark.parametrize("limits", [{"max_requests": 4}, {"max_bytes": 35}, {"max_requests": 50}])
def test_chunks_split_exactly_like_single_lines(tmp_path, limits):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_all(ShardWriter(local_opener(tmp_path / "a"), "job", **limits), lines(30))
    writer = ShardWriter(local_opener(tmp_path / "b"), "job", **limits)
    for ids, chunk in chunked(30):
        writer.write_chunk(ids, chunk)
    writer.close()
    assert [(s.requests, s.bytes, s.sha256, s.first_custom_id, s.last_custom_id) for s in writer.shards] == [
        (s.requests, s.bytes, s.sha256, s.first_custom_id, s.last_custom_id) for s in one
    ]


def test_splits_by_estimated_tokens_and_records_them(tmp_path):
    writer = ShardWriter(local_opener(tmp_path), "job", max_tokens=100)
    for ids, chunk in chunked(10):
        writer.write_chunk(ids, chunk, [30] * len(ids))
    writer.close()
    assert [s.requests for s in writer.shards] == [3, 3, 3, 1]
    assert [s.input_tokens for s in writer.shards] == [90, 90, 90, 30]


def test_a_single_request_over_the_token_limit_is_an_error(tmp_path):
    writer = ShardWriter(local_opener(tmp_path), "job", max_tokens=100)
    with pytest.raises(OpenAIBatchInputError, match=r"'id-0' alone is about 101 input tokens, over the limit of 100"):
        writer.write_chunk(["id-0"], [b"{}\n"], [101])


def test_shards_without_token_estimates_say_so(tmp_path):
    (shard,) = write_all(ShardWriter(local_opener(tmp_path), "job"), lines(3))
    assert shard.input_tokens is None
