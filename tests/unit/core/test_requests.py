from __future__ import annotations

import msgspec
import pytest

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.requests import Message, RecordError, RequestBuilder, RequestTemplate

CHAT = RequestTemplate(
    endpoint="/v1/chat/completions",
    model="gpt-4o-mini",
    messages=(Message("system", "Classify sentiment"), Message("user", "{{ text }}")),
    body={"max_tokens": 5},
)


def decode(line: bytes) -> dict:
    return msgspec.json.decode(line)


def test_chat_line_renders_record_fields_and_passes_body_through():
    custom_id, line = RequestBuilder(CHAT, "id").line({"id": 7, "text": "great product"}, 1)
    request = decode(line)
    assert custom_id == "7"
    assert line.endswith(b"\n")
    assert request == {
        "custom_id": "7",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Classify sentiment"},
                {"role": "user", "content": "great product"},
            ],
            "max_tokens": 5,
        },
    }


@pytest.mark.parametrize(
    ("endpoint", "key"),
    [("/v1/embeddings", "input"), ("/v1/completions", "prompt"), ("/v1/moderations", "input")],
)
def test_single_input_endpoints_put_the_prompt_in_their_own_key(endpoint, key):
    template = RequestTemplate(endpoint=endpoint, model="m", prompt="{{ record.title }}: {{ body }}")
    _, line = RequestBuilder(template, "k").line({"k": "a", "title": "T", "body": "B"}, 1)
    assert decode(line)["body"][key] == "T: B"


def test_custom_id_is_the_key_not_the_position_and_stable_across_builds():
    records = [{"id": "b", "text": "x"}, {"id": "a", "text": "y"}]
    first = [cid for cid, _ in RequestBuilder(CHAT, "id").lines(records)]
    again = [cid for cid, _ in RequestBuilder(CHAT, "id").lines(list(reversed(records)))]
    assert first == ["b", "a"]
    assert sorted(first) == sorted(again)


def test_missing_key_names_the_record_and_its_fields():
    with pytest.raises(RecordError, match=r"record #2 has no key field 'id' \(fields: text\)"):
        list(RequestBuilder(CHAT, "id").lines([{"id": 1, "text": "a"}, {"text": "b"}]))


def test_duplicate_key_is_an_error_naming_the_record():
    with pytest.raises(RecordError, match=r"record #3: duplicate key id='1'"):
        list(RequestBuilder(CHAT, "id").lines([{"id": 1, "text": "a"}, {"id": 2, "text": "b"}, {"id": 1, "text": "c"}]))


def test_too_long_key_is_refused():
    with pytest.raises(RecordError, match="at most 512"):
        RequestBuilder(CHAT, "id").line({"id": "x" * 513, "text": "a"}, 1)


def test_undefined_template_field_fails_instead_of_sending_an_empty_prompt():
    with pytest.raises(RecordError, match=r"record #1 \(id=1\).*'text' is undefined"):
        RequestBuilder(CHAT, "id").line({"id": 1, "txt": "typo"}, 1)


def test_template_runs_sandboxed():
    template = RequestTemplate(
        endpoint="/v1/completions", model="m", prompt="{{ record.__class__.__mro__[1].__subclasses__() }}"
    )
    with pytest.raises(RecordError):
        RequestBuilder(template, "k").line({"k": 1}, 1)


def test_non_mapping_record_is_refused():
    with pytest.raises(RecordError, match="record #1 is a str"):
        list(RequestBuilder(CHAT, "id").lines(["just text"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": "/v1/nope", "model": "m"}, "not a Batch API endpoint"),
        ({"endpoint": "/v1/chat/completions", "model": ""}, "model is required"),
        ({"endpoint": "/v1/chat/completions", "model": "m"}, "need 'messages'"),
        ({"endpoint": "/v1/embeddings", "model": "m"}, "needs 'prompt'"),
    ],
)
def test_bad_templates_fail_before_any_record(kwargs, message):
    with pytest.raises(OpenAIBatchInputError, match=message):
        RequestTemplate(**kwargs)
