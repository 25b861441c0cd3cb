"""Connection faults after (and before) the server commits, as the real ``openai`` client sees them."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.http_lib import http_lib
from tests.unit.emulator.helpers import Batches, chat_line

LINES = [chat_line(f"r{i}", f"text {i}") for i in range(20)]


def _all_batches(client: OpenAI) -> list[str]:
    return [batch.id for batch in client.batches.list(limit=100)]


def test_reset_after_create_commits_the_batch_but_loses_the_reply(
    client: OpenAI, batches: Batches, server: EmulatorServer
):
    uploaded = batches.upload(LINES)
    server.update_settings(reset_after_create=1)

    with pytest.raises(openai.APIConnectionError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")

    assert len(_all_batches(client)) == 1  # the server made the batch the client never heard of
    assert server.settings.reset_after_create == 0  # one shot, spent
    client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert len(_all_batches(client)) == 2


def test_error_after_create_answers_500_for_a_committed_batch(client: OpenAI, batches: Batches, server: EmulatorServer):
    uploaded = batches.upload(LINES)
    server.update_settings(error_after_create=1)

    with pytest.raises(openai.InternalServerError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")

    assert len(_all_batches(client)) == 1


def test_a_failed_create_does_not_spend_the_knob(client: OpenAI, server: EmulatorServer):
    server.update_settings(reset_after_create=1)

    with pytest.raises(openai.NotFoundError):  # no such file: nothing committed, the reply is kept
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")

    assert server.settings.reset_after_create == 1


def test_reset_before_upload_stores_nothing(client: OpenAI, batches: Batches, server: EmulatorServer):
    server.update_settings(reset_before_upload=1)

    with pytest.raises(openai.APIConnectionError):
        batches.upload(LINES)

    assert list(client.files.list()) == []
    assert batches.upload(LINES).id  # the next upload goes through


def test_reset_after_upload_stores_the_file_and_loses_the_reply(
    client: OpenAI, batches: Batches, server: EmulatorServer
):
    server.update_settings(reset_after_upload=1)

    with pytest.raises(openai.APIConnectionError):
        batches.upload(LINES, name="lost.jsonl")

    assert [f.filename for f in client.files.list()] == ["lost.jsonl"]


def test_reset_status_reads_drops_that_many_reads(client: OpenAI, batches: Batches, server: EmulatorServer):
    batch = batches.submit(LINES)
    server.update_settings(reset_status_reads=2)

    for _ in range(2):
        with pytest.raises(openai.APIConnectionError):
            client.batches.retrieve(batch.id)

    assert client.batches.retrieve(batch.id).id == batch.id


def test_cut_download_sends_a_short_body_then_drops(client: OpenAI, batches: Batches, server: EmulatorServer):
    batch = batches.run(LINES)
    assert batch.output_file_id is not None
    whole = client.files.content(batch.output_file_id).content
    server.update_settings(cut_downloads=1, cut_download_after_bytes=100)

    received: list[bytes] = []
    with client.files.with_streaming_response.content(batch.output_file_id) as response:
        assert response.headers["content-length"] == str(len(whole))
        with pytest.raises(http_lib.TransportError):
            received.extend(response.iter_bytes())

    assert b"".join(received) == whole[:100]
    assert client.files.content(batch.output_file_id).content == whole


def test_downloads_resume_with_a_range_request(client: OpenAI, batches: Batches, server: EmulatorServer):
    batch = batches.run(LINES)
    assert batch.output_file_id is not None
    whole = client.files.content(batch.output_file_id).content

    tail = client.files.with_raw_response.content(batch.output_file_id, extra_headers={"Range": "bytes=50-"})

    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 50-{len(whole) - 1}/{len(whole)}"
    assert tail.content == whole[50:]


def test_admin_settings_never_show_the_key_and_need_it(server: EmulatorServer):
    server.update_settings(api_key="sk-admin-secret-123456")
    with http_lib.Client(base_url=server.url) as http:
        assert http.get("/_emulator/settings").status_code == 401
        assert http.post("/_emulator/settings", json={"seed": 3}).status_code == 401
        assert http.get("/_emulator/health").status_code == 200
        shown = http.get("/_emulator/settings", headers={"Authorization": "Bearer sk-admin-secret-123456"})
    assert shown.status_code == 200
    assert shown.json()["api_key"] == "***"
    assert "sk-admin-secret" not in shown.text


def test_admin_settings_sent_back_as_shown_keep_the_key(server: EmulatorServer):
    server.update_settings(api_key="sk-admin-secret-123456")
    auth = {"Authorization": "Bearer sk-admin-secret-123456"}
    with http_lib.Client(base_url=server.url, headers=auth) as http:
        shown = http.get("/_emulator/settings").json()
        answer = http.post("/_emulator/settings", json={**shown, "seed": 5})
    assert answer.status_code == 200
    assert server.settings.api_key == "sk-admin-secret-123456"
    assert server.settings.seed == 5
