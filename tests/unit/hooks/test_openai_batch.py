"""The hook against the emulator over real HTTP with the official client — no client mocks."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time

import openai
import pytest

from airflow_provider_openai_batch.hooks.call_retries import CallRetries
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests.conftest import TEST_API_KEY
from tests.http_lib import http_lib
from tests.unit.operators.test_submit import knobs


def request_line(custom_id: str, text: str = "hello") -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 5}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


@pytest.fixture
def hook(openai_conn) -> OpenAIBatchHook:
    return OpenAIBatchHook(conn_id=openai_conn)


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(request_line(f"r-{i}") for i in range(3)) + "\n")
    return path


def wait_terminal(hook: OpenAIBatchHook, batch_id: str, timeout: float = 10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        batch = hook.get_batch(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not finish")


def test_test_connection_succeeds_against_the_emulator(hook, emulator):
    ok, message = hook.test_connection()
    assert ok, message
    assert emulator.base_url.rstrip("/") in message


def test_upload_streams_a_local_file_and_reads_back_metadata_and_content(hook, input_file, tmp_path):
    uploaded = hook.upload_file(str(input_file))
    assert uploaded.purpose == "batch"
    assert uploaded.filename == "requests.jsonl"
    assert hook.get_file(uploaded.id).bytes == input_file.stat().st_size
    assert list(hook.iter_file_lines(uploaded.id)) == input_file.read_bytes().splitlines()
    target = hook.download_file(uploaded.id, f"file://{tmp_path}/copy/requests.jsonl")
    assert (tmp_path / "copy" / "requests.jsonl").read_bytes() == input_file.read_bytes()
    assert str(target).endswith("copy/requests.jsonl")
    assert hook.delete_file(uploaded.id) is True
    with pytest.raises(openai.NotFoundError):
        hook.get_file(uploaded.id)


def test_create_batch_carries_metadata_and_completes(hook, input_file):
    uploaded = hook.upload_file(input_file)
    batch = hook.create_batch(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        metadata={"job": "j1"},
        output_expires_after_seconds=3600,
    )
    assert batch.metadata == {"job": "j1"}
    done = wait_terminal(hook, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    ids = sorted(json.loads(line)["custom_id"] for line in hook.iter_file_lines(done.output_file_id))
    assert ids == ["r-0", "r-1", "r-2"]


def test_list_batches_pages_through_everything_and_find_batch_matches_metadata(hook, input_file):
    uploaded = hook.upload_file(input_file)
    marker = f"find-{time.time_ns()}"
    created = [
        hook.create_batch(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", metadata={"marker": marker, "n": str(i)}
        )
        for i in range(5)
    ]
    listed = [b.id for b in hook.list_batches(page_size=2)]
    assert {b.id for b in created} <= set(listed)
    assert listed.index(created[-1].id) < listed.index(created[0].id)  # newest first
    assert [b.id for b in hook.find_batches({"marker": marker, "n": "3"})] == [created[3].id]
    assert [b.id for b in hook.find_batches({"marker": marker})] == [b.id for b in reversed(created)]
    assert hook.find_batches({"marker": "nobody"}) == []


def test_find_batches_stops_at_the_lookback_window(hook, input_file):
    uploaded = hook.upload_file(input_file)
    marker = f"old-{time.time_ns()}"
    hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions", metadata={"marker": marker})
    assert hook.find_batches({"marker": marker}, created_after=time.time() + 60) == []


def test_cancel_batch(hook, input_file, emulator):
    emulator.update_settings(in_progress_seconds=30)
    try:
        uploaded = hook.upload_file(input_file)
        batch = hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
        assert hook.cancel_batch(batch.id).status in ("cancelling", "cancelled")
        assert wait_terminal(hook, batch.id).status == "cancelled"
    finally:
        emulator.update_settings(in_progress_seconds=0.05)


def test_bad_key_fails_test_connection_without_echoing_any_key(openai_conn, emulator, monkeypatch):
    emulator.update_settings(api_key="sk-the-only-valid-key")
    try:
        ok, message = OpenAIBatchHook(conn_id=openai_conn).test_connection()
    finally:
        emulator.update_settings(api_key=None)
    assert not ok
    assert "401" in message
    assert TEST_API_KEY not in message
    assert "sk-the-only-valid-key" not in message


async def test_async_client_reads_the_same_connection(hook, input_file):
    uploaded = hook.upload_file(input_file)
    client = await hook.get_async_client()
    async with client:
        fetched = await client.files.retrieve(uploaded.id)
    assert fetched.id == uploaded.id


def test_azure_connection_builds_azure_clients(monkeypatch):
    conn = {
        "conn_type": "openai_batch",
        "password": "k",
        "extra": {"api_version": "2024-10-21", "azure_endpoint": "https://example.openai.azure.com"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_TEST", json.dumps(conn))
    hook = OpenAIBatchHook(conn_id="azure_test")
    assert isinstance(hook.client, openai.AzureOpenAI)


def test_connection_of_the_official_openai_type_works(emulator, monkeypatch):
    conn = {"conn_type": "openai", "host": emulator.base_url, "password": TEST_API_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_OFFICIAL", json.dumps(conn))
    ok, _ = OpenAIBatchHook(conn_id="official").test_connection()
    assert ok


def _hook_on(handler) -> OpenAIBatchHook:
    """A hook whose client talks to ``handler``: a service the emulator cannot play."""
    hook = OpenAIBatchHook(call_retries=CallRetries(base_delay=0.001))
    client = openai.OpenAI(
        base_url="http://service/v1",
        api_key="sk-x",
        http_client=http_lib.Client(transport=http_lib.MockTransport(handler)),
    )
    hook.__dict__["single_shot_client"] = client.with_options(max_retries=0)
    return hook


def _cut(body: bytes, after: int):
    yield body[:after]
    raise http_lib.ReadError("connection reset by peer")


def test_a_resumed_download_skips_what_it_had_when_the_server_ignores_range():
    """A service that answers a Range request with the whole file again: no byte twice, none lost."""
    whole = b"".join(b'{"custom_id":"r%d"}\n' % i for i in range(50))
    asked: list[str | None] = []

    def handler(request: http_lib.Request) -> http_lib.Response:
        asked.append(request.headers.get("range"))
        body = _cut(whole, 333) if len(asked) == 1 else iter([whole])
        return http_lib.Response(200, content=body, headers={"content-length": str(len(whole))})

    assert b"".join(_hook_on(handler).iter_file_chunks("file-1", chunk_size=100)) == whole
    assert asked == [None, "bytes=300-"]  # from the last whole chunk handed on


@pytest.mark.parametrize("honours_identity", [True, False], ids=["identity-part", "gzip-part"])
def test_a_resumed_download_of_a_compressed_body_counts_the_file_bytes(honours_identity):
    """
    A gzip-encoded download cut off: the bytes received are the file's, not the wire's, so the
    rest is asked for uncompressed; a server that still sends a part of its gzip stream (whose
    offsets are not the file's) gets asked for the whole file, and what was received is skipped.
    """
    whole = b"".join(
        b'{"custom_id":"r%d","hash":"%s"}\n' % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(400)
    )
    packed = gzip.compress(whole)
    asked: list[tuple[str | None, str]] = []

    def handler(request: http_lib.Request) -> http_lib.Response:
        ranged, accepts = request.headers.get("range"), request.headers.get("accept-encoding", "")
        asked.append((ranged, accepts))
        gzipped = "gzip" in accepts or not honours_identity
        body = packed if gzipped else whole
        headers = {"content-encoding": "gzip"} if gzipped else {}
        if len(asked) == 1:
            return http_lib.Response(200, content=_cut(body, len(body) // 2), headers=headers)
        if ranged:  # a Range names bytes of the representation sent: RFC 9110 section 14.1.2
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            headers["content-range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            return http_lib.Response(206, content=body[start:], headers=headers)
        return http_lib.Response(200, content=body, headers=headers)

    assert b"".join(_hook_on(handler).iter_file_chunks("file-1", chunk_size=1000)) == whole
    assert asked[1][0] is not None and asked[1][1] == "identity"
    assert len(asked) == (2 if honours_identity else 3)


@pytest.fixture
def quick_hook(openai_conn) -> OpenAIBatchHook:
    """Resets carry no retry-after: the default attempts with short waits."""
    return OpenAIBatchHook(conn_id=openai_conn, call_retries=CallRetries(base_delay=0.01, max_delay=0.05))


def _named(hook: OpenAIBatchHook, filename: str) -> list[str]:
    return [f.id for f in hook.client.files.list(purpose="batch") if f.filename == filename]


def test_an_upload_retried_after_a_lost_reply_deletes_the_copy_it_stored(
    quick_hook, input_file, emulator, capsys, caplog
):
    name = f"job-{time.time_ns()}-shard-00000.jsonl"
    with knobs(emulator, reset_after_upload=1), caplog.at_level(logging.WARNING):
        uploaded = quick_hook.upload_file(input_file, filename=name)

    assert _named(quick_hook, name) == [uploaded.id]
    logged = capsys.readouterr().out + caplog.text
    assert f"Upload of {name}: deleted file-" in logged
    assert f"(kept {uploaded.id})" in logged


def test_the_copies_deleted_are_only_those_of_the_retried_upload(quick_hook, input_file, tmp_path, emulator):
    name = f"job-{time.time_ns()}-shard-00000.jsonl"
    other = tmp_path / "other.jsonl"
    other.write_text(request_line("x") + "\n")
    earlier = quick_hook.upload_file(other, filename=name)  # same name, other bytes

    with knobs(emulator, reset_before_upload=1, reset_after_upload=1):
        uploaded = quick_hook.upload_file(input_file, filename=name)

    assert sorted(_named(quick_hook, name)) == sorted([earlier.id, uploaded.id])


def test_a_download_cut_off_again_and_again_among_500s_gives_every_line_once(quick_hook, tmp_path, emulator):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(request_line(f"r-{i}", "x" * i) + "\n" for i in range(60)))
    uploaded = quick_hook.upload_file(path)

    with knobs(emulator, cut_downloads=4, cut_download_after_bytes=900, http_500_rate=0.4, seed=11):
        lines = list(quick_hook.iter_file_lines(uploaded.id))

    assert lines == path.read_bytes().splitlines()
    assert emulator.settings.cut_downloads == 0  # every cut happened inside the file


def test_a_cancel_rides_out_more_500s_than_the_client_retries(quick_hook, input_file, emulator):
    """Seed 5 draws three 500s in a row, then a pass, at this rate: the client alone gives up at three."""
    with knobs(emulator, in_progress_seconds=30):
        uploaded = quick_hook.upload_file(input_file)
        batch = quick_hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
        with knobs(emulator, http_500_rate=0.8, seed=5, retry_after_seconds=0.01):
            cancelled = quick_hook.cancel_batch(batch.id)
        assert cancelled.status in ("cancelling", "cancelled")


def test_a_cancel_whose_reply_was_lost_takes_the_retry_s_409_as_done():
    """The first try cancelled the batch but its reply was lost; by the retry the batch has ended."""
    batch = {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": "cancelled",
        "created_at": 1,
    }
    asked: list[str] = []

    def handler(request: http_lib.Request) -> http_lib.Response:
        asked.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return http_lib.Response(200, json=batch)
        if len(asked) == 1:
            raise http_lib.ReadError("connection reset by peer")
        return http_lib.Response(409, json={"error": {"message": "Cannot cancel a batch with status 'cancelled'."}})

    assert _hook_on(handler).cancel_batch("batch_1").status == "cancelled"
    assert asked == ["POST /v1/batches/batch_1/cancel"] * 2 + ["GET /v1/batches/batch_1"]


def test_a_cancel_refused_at_the_first_try_is_an_error(quick_hook, input_file, emulator):
    uploaded = quick_hook.upload_file(input_file)
    batch = quick_hook.create_batch(input_file_id=uploaded.id, endpoint="/v1/chat/completions")
    wait_terminal(quick_hook, batch.id)
    with pytest.raises(openai.ConflictError):
        quick_hook.cancel_batch(batch.id)
