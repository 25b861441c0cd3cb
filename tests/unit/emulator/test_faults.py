"""Injected faults: HTTP 429/500 on API calls, failing requests inside a batch, and the API key."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.http_lib import http_lib
from tests.unit.emulator.helpers import Batches, chat_line

LINES = [chat_line(f"r{i}", f"text {i}") for i in range(40)]


def test_http_429_raises_rate_limit_error_with_retry_after(client: OpenAI, server: EmulatorServer):
    server.update_settings(http_429_rate=1.0, retry_after_seconds=2)

    with pytest.raises(openai.RateLimitError) as raised:
        client.files.list()

    assert raised.value.response.headers["retry-after"] == "2"
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.request_id is not None and raised.value.request_id.startswith("req_")


def test_http_500_raises_internal_server_error(client: OpenAI, server: EmulatorServer):
    server.update_settings(http_500_rate=1.0)

    with pytest.raises(openai.InternalServerError) as raised:
        client.batches.list()

    assert raised.value.body["type"] == "server_error"


def test_client_retries_through_intermittent_faults(server: EmulatorServer):
    server.update_settings(http_429_rate=0.3, http_500_rate=0.3, seed=3)
    patient = OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=20)
    failures_seen = 0
    for _ in range(10):
        response = patient.files.with_raw_response.list()
        failures_seen += int(response.retries_taken > 0)

    assert failures_seen > 0  # faults happened, and every call still succeeded


def test_faults_follow_the_seed(server: EmulatorServer):
    def pattern() -> list[int]:
        server.update_settings(http_429_rate=0.5, seed=11)
        with http_lib.Client(base_url=server.base_url) as http:
            return [http.get("/files").status_code for _ in range(12)]

    first, second = pattern(), pattern()

    assert first == second
    assert set(first) == {200, 429}


def test_request_failure_rate_writes_4xx_5xx_lines_to_the_error_file(server: EmulatorServer, batches: Batches):
    server.update_settings(request_failure_rate=0.5)

    batch = batches.run(LINES)

    failed = batches.lines(batch.error_file_id)
    assert 0 < len(failed) < len(LINES)
    assert batch.request_counts.failed == len(failed)
    assert batch.request_counts.completed == len(batches.lines(batch.output_file_id))
    for line in failed:
        assert line["error"] is None
        assert line["response"]["status_code"] in (400, 500)
        assert set(line["response"]["body"]["error"]) == {"message", "type", "param", "code"}


def test_batch_where_every_request_failed_completes_with_only_an_error_file(server: EmulatorServer, batches: Batches):
    server.update_settings(request_failure_rate=1.0)

    batch = batches.run(LINES[:5])

    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.error_file_id is not None
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 0, "failed": 5}


def test_a_request_the_endpoint_rejects_gets_a_400_line(batches: Batches):
    bad = {"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}

    batch = batches.run([chat_line("good", "hi"), bad])

    (line,) = batches.lines(batch.error_file_id)
    assert line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"]["param"] == "messages"
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}


def test_configured_api_key_rejects_other_keys_with_401(server: EmulatorServer):
    server.update_settings(api_key="sk-right-key-123456")
    wrong = OpenAI(base_url=server.base_url, api_key="sk-wrong-key-654321", max_retries=0)
    right = OpenAI(base_url=server.base_url, api_key="sk-right-key-123456", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.files.list()

    assert raised.value.code == "invalid_api_key"
    assert "sk-wrong-key-654321" not in raised.value.body["message"]
    assert list(right.files.list()) == []


def test_any_api_key_is_accepted_by_default(server: EmulatorServer):
    anyone = OpenAI(base_url=server.base_url, api_key="whatever", max_retries=0)

    assert list(anyone.batches.list()) == []


def test_unknown_route_is_an_openai_shaped_404(server: EmulatorServer):
    response = http_lib.get(f"{server.base_url}/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/nothing-here)"


@pytest.mark.parametrize("value", ["", ["a", ""], [[1], []], ["x"] * 2049])
def test_embedding_inputs_the_endpoint_refuses_get_a_400_line(batches: Batches, value):
    def embedding(custom_id: str, value) -> dict:
        body = {"model": "text-embedding-3-small", "input": value}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}

    batch = batches.run([embedding("good", "hello"), embedding("bad", value)], endpoint="/v1/embeddings")

    (line,) = batches.lines(batch.error_file_id)
    assert (line["custom_id"], line["response"]["status_code"]) == ("bad", 400)
    assert line["response"]["body"]["error"]["param"] == "input"
    assert batch.request_counts.model_dump() == {"total": 2, "completed": 1, "failed": 1}
