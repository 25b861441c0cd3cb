from __future__ import annotations

import functools

import msgspec
import pytest

from airflow_provider_openai_batch.core.build.requests import Message, RecordError, RequestBuilder, RequestTemplate
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

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


# --- the encoded-once layout and the chunked fast path -------------------------------------------

RECORDS = [
    {
        "id": i,
        "text": f'review {i} with "quotes", naïve 東京 \\ {{braces}}',
        "title": f"T{i}",
        "url": f"https://x/{i}.png",
    }
    for i in range(300)  # more than one chunk
]
LAYOUTS = [
    RequestTemplate(
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        messages=(
            {"role": "system", "content": 'Classify. Say "yes" or {no}.'},
            {"role": "user", "content": "{{ title }}: {{ text }}", "name": "u{{ id }}"},
        ),
        body={"max_completion_tokens": 5, "temperature": 0.1, "metadata": {"k": "v"}, "logit_bias": {"50256": -100}},
    ),
    RequestTemplate(
        endpoint="/v1/chat/completions",
        model="gpt-4o",
        messages=(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe {{ title|lower }}"},
                    {"type": "image_url", "image_url": {"url": "{{ url }}", "detail": "low"}},
                ],
            },
        ),
    ),
    RequestTemplate(
        endpoint="/v1/responses", model="gpt-4.1-mini", prompt="{{ text }}", body={"instructions": "Be brief"}
    ),
    RequestTemplate(
        endpoint="/v1/responses", model="gpt-4.1-mini", messages=({"role": "developer", "content": "{{ title }}"},)
    ),
    RequestTemplate(endpoint="/v1/embeddings", model="text-embedding-3-small", prompt=["{{ title }}", "{{ text }}"]),
    RequestTemplate(endpoint="/v1/completions", model="gpt-3.5-turbo-instruct", prompt="Q: {{ text }}\nA:"),
    RequestTemplate(
        endpoint="/v1/moderations",
        model="omni-moderation-latest",
        prompt=[{"type": "text", "text": "{{ text }}"}, {"type": "image_url", "image_url": {"url": "{{ url }}"}}],
    ),
]


@functools.cache
def jinja_template(source: str):
    from airflow_provider_openai_batch.core.build.templating import ENV

    return ENV.from_string(source)


def expected_request(template: RequestTemplate, record: dict) -> bytes:
    """The request as a plain dict rendered with Jinja and encoded whole: what the layout must equal."""
    from airflow_provider_openai_batch.core.build.templating import context

    def render(value):
        if isinstance(value, str):
            return jinja_template(value).render(context(record))
        if isinstance(value, dict):
            return {k: render(v) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v) for v in value]
        return value

    body = template.body_tree()
    key = template.prompt_key()
    body[key] = render(body[key])
    request = {"custom_id": str(record["id"]), "method": "POST", "url": template.endpoint, "body": body}
    return msgspec.json.encode(request) + b"\n"


@pytest.mark.parametrize("template", LAYOUTS, ids=lambda t: t.endpoint)
def test_lines_are_byte_identical_to_encoding_the_rendered_request(template):
    built = list(RequestBuilder(template, "id").lines(RECORDS))
    assert [line for _, line in built] == [expected_request(template, r) for r in RECORDS]
    assert [cid for cid, _ in built] == [str(r["id"]) for r in RECORDS]


@pytest.mark.parametrize("template", LAYOUTS, ids=lambda t: t.endpoint)
def test_chunked_build_equals_record_by_record(template):
    chunked = [line for _, line in RequestBuilder(template, "id").lines(RECORDS)]
    one_by_one = RequestBuilder(template, "id")
    assert chunked == [one_by_one.line(r, n)[1] for n, r in enumerate(RECORDS, 1)]


def test_a_bad_record_deep_in_a_later_chunk_is_named_by_its_position():
    records = [{"id": i, "text": "t"} for i in range(400)]
    records[299] = {"id": 299, "txt": "typo"}
    with pytest.raises(RecordError, match=r"record #300 \(id=299\).*'text' is undefined"):
        list(RequestBuilder(CHAT, "id").lines(records))


def test_a_duplicate_in_another_chunk_is_caught():
    records = [{"id": i, "text": "t"} for i in range(300)] + [{"id": 5, "text": "again"}]
    with pytest.raises(RecordError, match=r"record #301: duplicate key id='5'"):
        list(RequestBuilder(CHAT, "id").lines(records))


def test_records_that_are_not_dicts_still_render_through_jinja():
    from types import MappingProxyType

    records = [MappingProxyType({"id": i, "text": f"t{i}"}) for i in range(3)]
    lines = [decode(line) for _, line in RequestBuilder(CHAT, "id").lines(records)]
    assert [r["body"]["messages"][1]["content"] for r in lines] == ["t0", "t1", "t2"]


def test_a_failing_template_expression_names_the_record():
    template = RequestTemplate(endpoint="/v1/completions", model="m", prompt="{{ 1 / n }}")
    with pytest.raises(RecordError, match=r"record #2 \(k=2\): ZeroDivisionError"):
        list(RequestBuilder(template, "k").lines([{"k": 1, "n": 1}, {"k": 2, "n": 0}]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"body": {"model": "x"}}, "body sets 'model'"),
        ({"body": {"messages": []}}, "body sets 'messages'"),
        ({"body": {"response_format": {}}, "response_format": {"type": "json_object"}}, "body sets 'response_format'"),
        ({"prompt": "{{ a }}"}, "take 'messages', not 'prompt'"),
    ],
)
def test_body_may_not_override_what_the_template_fills(kwargs, message):
    with pytest.raises(OpenAIBatchInputError, match=message):
        RequestTemplate(
            endpoint="/v1/chat/completions", model="m", messages=({"role": "user", "content": "x"},), **kwargs
        )


def test_response_format_lands_where_each_endpoint_wants_it():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    chat = RequestTemplate(
        endpoint="/v1/chat/completions", model="m", messages=(Message("user", "{{ t }}"),), response_format=schema
    )
    body = decode(RequestBuilder(chat, "k").line({"k": 1, "t": "x"}, 1)[1])["body"]
    assert body["response_format"]["json_schema"]["schema"]["additionalProperties"] is False
    responses = RequestTemplate(endpoint="/v1/responses", model="m", prompt="{{ t }}", response_format=schema)
    body = decode(RequestBuilder(responses, "k").line({"k": 1, "t": "x"}, 1)[1])["body"]
    assert body["text"]["format"]["schema"]["required"] == ["label"]


# --- token estimates --------------------------------------------------------------------------


@pytest.mark.parametrize("template", LAYOUTS, ids=lambda t: t.endpoint)
def test_exact_token_estimate_equals_counting_each_rendered_request(template):
    from airflow_provider_openai_batch.core.tokens import count_request_tokens

    builder = RequestBuilder(template, "id", token_estimate="exact")
    tokens = [t for chunk in builder.chunks(RECORDS) for t in chunk.tokens]
    expected = [count_request_tokens(template.endpoint, decode(expected_request(template, r))["body"]) for r in RECORDS]
    assert tokens == [e.input_tokens for e in expected]
    assert builder.output_tokens.max_output_tokens == expected[0].max_output_tokens


def test_endpoints_without_a_token_counter_build_without_an_estimate():
    template = RequestTemplate(endpoint="/v1/images/generations", model="gpt-image-1", prompt="{{ t }}")
    builder = RequestBuilder(template, "k", token_estimate="sample")
    (chunk,) = builder.chunks([{"k": 1, "t": "a cat"}])
    assert chunk.tokens is None and builder.output_tokens is None
    assert "Cannot estimate tokens for url '/v1/images/generations'" in builder.token_note


def test_embedding_inputs_per_request_follow_the_prompt_list():
    assert LAYOUTS[4].inputs_per_request() == 2
    assert LAYOUTS[2].inputs_per_request() == 0


def test_text_json_cannot_carry_names_the_record():
    records = [{"id": 1, "text": "fine"}, {"id": 2, "text": "broken \ud800 text"}]
    with pytest.raises(
        RecordError, match=r"record #2 \(id='2'\): messages\[1\]\.content renders text that is not valid"
    ):
        list(RequestBuilder(CHAT, "id").lines(records))
