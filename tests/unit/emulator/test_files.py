"""The Files API: upload, list, retrieve, content, delete, and the .jsonl rule for batch files."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI
from openai.types import FileObject

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.http_lib import http_lib

CONTENT = b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'


def test_upload_returns_a_file_object_that_parses_strictly(client: OpenAI):
    uploaded = client.files.create(file=("input.jsonl", CONTENT), purpose="batch")

    assert FileObject.model_validate(uploaded.model_dump(), strict=True) == uploaded
    assert uploaded.id.startswith("file-")
    assert (uploaded.filename, uploaded.purpose, uploaded.bytes) == ("input.jsonl", "batch", len(CONTENT))
    assert uploaded.expires_at == uploaded.created_at + 30 * 24 * 3600


def test_upload_honours_expires_after(client: OpenAI):
    uploaded = client.files.create(
        file=("input.jsonl", CONTENT), purpose="batch", expires_after={"anchor": "created_at", "seconds": 7200}
    )

    assert uploaded.expires_at == uploaded.created_at + 7200


def test_batch_upload_without_jsonl_name_is_a_400(client: OpenAI):
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("input.csv", CONTENT), purpose="batch")

    assert raised.value.status_code == 400
    assert raised.value.body["message"] == "Invalid file format for Batch API. Must be .jsonl"


def test_upload_without_purpose_is_a_400_naming_the_parameter(server: EmulatorServer):
    response = http_lib.post(f"{server.base_url}/files", files={"file": ("input.jsonl", CONTENT)})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"
    assert response.json()["error"]["code"] == "missing_required_parameter"


def test_list_retrieve_content_and_delete(client: OpenAI):
    first = client.files.create(file=("one.jsonl", CONTENT), purpose="batch")
    second = client.files.create(file=("two.jsonl", CONTENT * 2), purpose="batch")

    listed = [f.id for f in client.files.list()]
    retrieved = client.files.retrieve(first.id)
    with client.files.with_streaming_response.content(second.id) as response:
        streamed = b"".join(response.iter_bytes())
    deleted = client.files.delete(first.id)

    assert listed == [second.id, first.id]  # newest first
    assert retrieved == first
    assert streamed == CONTENT * 2
    assert deleted.deleted is True and deleted.id == first.id
    assert [f.id for f in client.files.list()] == [second.id]


def test_unknown_file_is_a_404(client: OpenAI):
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-nope")
    with pytest.raises(openai.NotFoundError):
        client.files.delete("file-nope")


def test_large_upload_is_written_to_disk_in_chunks(client: OpenAI, server: EmulatorServer):
    big = CONTENT * 60_000  # ~4.5 MB, past Starlette's in-memory spool

    uploaded = client.files.create(file=("big.jsonl", big), purpose="batch")

    stored = server.runtime.store.get_file(uploaded.id).path
    assert stored.stat().st_size == len(big) == uploaded.bytes
    assert client.files.content(uploaded.id).read() == big
