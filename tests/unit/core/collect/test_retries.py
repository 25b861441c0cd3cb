"""Retries: which failures earn another attempt, and retry shards that are the same file every time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import pytest

from airflow_provider_openai_batch.core.collect.retries import RetryPolicy, RetryShardWriter, request_ids
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.exceptions import ReconcileError
from tests.unit.core.collect.rows import ResultRow, rows_to_batch


def row(custom_id: str, status: str, http_status: int | None = None, error_code: str | None = None) -> ResultRow:
    return ResultRow(
        "job", 0, "b", custom_id, custom_id, status, http_status=http_status, error_code=error_code, collected_at=0
    )


CASES = {
    "429": (row("429", "failed", 429), True),
    "500": (row("500", "failed", 500), True),
    "503": (row("503", "failed", 503), True),
    "408": (row("408", "failed", 408), True),
    "timeout": (row("timeout", "failed", None, "request_timeout"), True),
    "expired": (row("expired", "expired", None, "batch_expired"), True),
    "400": (row("400", "failed", 400, "invalid_request_error"), False),
    "401": (row("401", "failed", 401), False),
    "404": (row("404", "failed", 404), False),
    "cancelled": (row("cancelled", "cancelled", None, "batch_cancelled"), False),
    "invalid": (row("invalid", "invalid_output", 200, "invalid_json"), False),
    "missing": (row("missing", "missing"), False),
    "ok": (row("ok", "succeeded", 200), False),
    "unknown-error": (row("unknown-error", "failed", None, "weird"), False),
}


def retried(policy: RetryPolicy, attempt: int) -> set[str]:
    batch = rows_to_batch([r for r, _ in CASES.values()])
    return set(batch.filter(policy.retry_mask(batch, attempt)).column("custom_id").to_pylist())


def test_throttling_server_errors_timeouts_and_expiry_are_retried_other_4xx_never():
    assert retried(RetryPolicy(max_attempts=3), attempt=1) == {k for k, (_, retry) in CASES.items() if retry}


def test_cancelled_requests_are_retried_only_on_request():
    assert "cancelled" in retried(RetryPolicy(max_attempts=3, retry_cancelled=True), attempt=1)


def test_nothing_is_retried_at_the_last_attempt():
    assert retried(RetryPolicy(max_attempts=3), attempt=3) == set()
    assert retried(RetryPolicy(max_attempts=1), attempt=1) == set()


@pytest.mark.parametrize("value", [0, 11, 2.5, "3"])
def test_max_attempts_out_of_range_is_refused(value):
    with pytest.raises(OpenAIBatchInputError, match="max_attempts"):
        RetryPolicy(max_attempts=value)


def request(custom_id: str) -> bytes:
    return msgspec.json.encode({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}) + b"\n"


def opener(root: Path):
    def open_shard(name: str):
        return str(root / name), (root / name).open("wb")

    return open_shard


def test_retry_shards_copy_the_lines_verbatim_in_file_order_and_track_origins(tmp_path):
    writer = RetryShardWriter(opener(tmp_path), "job-attempt-2", 2, max_requests=3)
    writer.add([request(f"s0-{i}") for i in range(4)], {"s0-1", "s0-3"}, [(0, 4)])
    writer.add([request(f"s1-{i}") for i in range(3)], {"s1-0", "s1-1", "s1-2"}, [(1, 3)])
    first, second = writer.close()
    assert Path(first.shard.path).read_bytes() == request("s0-1") + request("s0-3") + request("s1-0")
    assert Path(second.shard.path).read_bytes() == request("s1-1") + request("s1-2")
    assert (first.origins, second.origins) == (((0, 2), (1, 1)), ((1, 2),))
    assert first.shard.sha256 == hashlib.sha256(Path(first.shard.path).read_bytes()).hexdigest()
    assert first.to_dict()["attempt"] == 2 and first.to_dict()["origins"] == [[0, 2], [1, 1]]
    assert writer.requests == 5


def test_the_same_failures_make_the_same_retry_file(tmp_path):
    def sha(folder: str) -> str:
        (tmp_path / folder).mkdir()
        writer = RetryShardWriter(opener(tmp_path / folder), "job-attempt-2", 2)
        writer.add([request(f"r{i}") for i in range(5)], {"r3", "r1"}, [(0, 5)])
        (shard,) = writer.close()
        return shard.shard.sha256

    assert sha("first") == sha("second")


def test_lines_of_a_retry_shard_keep_their_own_origins_when_retried_again(tmp_path):
    writer = RetryShardWriter(opener(tmp_path), "job-attempt-3", 3)
    writer.add([request("a"), request("b"), request("c")], {"a", "c"}, [(4, 2), (9, 1)])
    (shard,) = writer.close()
    assert shard.origins == ((4, 1), (9, 1))


def test_a_request_to_retry_missing_from_its_shard_is_an_error(tmp_path):
    writer = RetryShardWriter(opener(tmp_path), "job-attempt-2", 2)
    with pytest.raises(ReconcileError, match="1 request"):
        writer.add([request("a")], {"a", "ghost"}, [(0, 1)])


def test_request_ids_are_read_from_the_prefix_or_parsed_when_escaped_or_reordered():
    plain = [request(f"id-{i}") for i in range(3)]
    assert list(request_ids(plain)) == ["id-0", "id-1", "id-2"]
    escaped = msgspec.json.encode({"custom_id": 'say "hi"\\n', "method": "POST"}) + b"\n"
    unicode = request("fiche-é-字")
    reordered = msgspec.json.encode({"method": "POST", "custom_id": "late"})  # no trailing newline
    lines = [plain[0], escaped, b"\n", unicode, reordered]
    assert list(request_ids(lines)) == ["id-0", 'say "hi"\\n', "fiche-é-字", "late"]
