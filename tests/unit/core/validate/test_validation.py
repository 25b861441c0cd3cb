"""One test per validation rule: each asserts the exact ``path:line`` and a fragment of the message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_openai_batch.core.validate.validation import ValidationReport, Validator, validate_paths

CHAT = "/v1/chat/completions"


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **extra}


def line(custom_id: Any = "r1", url: str = CHAT, body: Any = None, **top: Any) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": chat_body() if body is None else body}
    return json.dumps({**request, **top}).encode() + b"\n"


def write(tmp_path: Path, lines: list[bytes], name: str = "in.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(lines))
    return str(path)


def check(tmp_path: Path, lines: list[bytes], **limits: int) -> tuple[str, ValidationReport]:
    path = write(tmp_path, lines)
    return path, validate_paths([path], **limits)


def only_error(report: ValidationReport) -> str:
    assert report.error_count == 1, report.format()
    return str(report.problems[0])


# --- clean input --------------------------------------------------------------------------------


def test_clean_chat_file_passes_with_counts(tmp_path: Path) -> None:
    lines = [line("a"), line("b")]
    path, report = check(tmp_path, lines)
    assert report.ok
    assert report.problems == ()
    (summary,) = report.files
    assert (summary.path, summary.requests, summary.bytes) == (path, 2, len(b"".join(lines)))
    assert (summary.url, summary.model) == (CHAT, "gpt-4o-mini")


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/v1/responses", {"model": "gpt-4.1", "input": "hi", "text": {"format": {"type": "text"}}}),
        (
            "/v1/responses",
            {"model": "gpt-4.1", "input": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search"}]},
        ),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 5}),
        ("/v1/moderations", {"model": "omni-moderation-latest", "input": [{"type": "text", "text": "hi"}]}),
        ("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat", "size": "1024x1024"}),
        ("/v1/images/edits", {"model": "gpt-image-1", "prompt": "a hat", "images": [{"file_id": "file-1"}]}),
        ("/v1/videos", {"model": "sora-2", "prompt": "a cat", "seconds": "4"}),
    ],
)
def test_clean_file_passes_for_every_endpoint(tmp_path: Path, url: str, body: dict[str, Any]) -> None:
    _, report = check(tmp_path, [line(url=url, body=body)])
    assert report.ok, report.format()


def test_rich_chat_request_passes(tmp_path: Path) -> None:
    body = chat_body(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "u"}}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="auto",
        response_format={"type": "json_object"},
        stop=["\n"],
        stream=False,
        metadata={"job": "x"},
    )
    _, report = check(tmp_path, [line(body=body)])
    assert report.ok, report.format()


# --- the shape of a line ------------------------------------------------------------------------


def test_not_json(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), b'{"custom_id": \n'])
    assert only_error(report).startswith(f"{path}:2: not valid JSON")


def test_blank_line_in_the_middle(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), b"\n", line("b")])
    assert only_error(report).startswith(f"{path}:2: blank line")


def test_trailing_blank_line(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), b"  \n"])
    assert only_error(report).startswith(f"{path}:2: blank line")


def test_final_newline_is_not_a_blank_line(tmp_path: Path) -> None:
    _, report = check(tmp_path, [line("a"), line("b").rstrip(b"\n")])
    assert report.ok


def test_bom(tmp_path: Path) -> None:
    path, report = check(tmp_path, [b"\xef\xbb\xbf" + line("a"), line("b")])
    assert only_error(report).startswith(f"{path}:1: file starts with a UTF-8 byte order mark")


def test_not_utf8(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), line("b").replace(b"hi", b"h\xe9")])
    assert only_error(report).startswith(f"{path}:2: not valid UTF-8")


def test_utf8_is_fine(tmp_path: Path) -> None:
    _, report = check(tmp_path, [line("a").replace(b"hi", "héllo 東京".encode())])
    assert report.ok


def test_not_an_object(tmp_path: Path) -> None:
    path, report = check(tmp_path, [b'["custom_id", "r1"]\n'])
    assert only_error(report) == f"{path}:1: a line must be a JSON object, got array"


@pytest.mark.parametrize("key", ["custom_id", "method", "url", "body"])
def test_missing_top_level_key(tmp_path: Path, key: str) -> None:
    request = json.loads(line("a"))
    del request[key]
    path, report = check(tmp_path, [json.dumps(request).encode() + b"\n"])
    assert f"{path}:1: missing top-level key {key!r}" in [str(p) for p in report.problems]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", headers={})])
    assert only_error(report).startswith(f"{path}:1: unknown top-level key 'headers'")


def test_method_not_post(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", method="GET")])
    assert only_error(report) == f"{path}:1: method must be \"POST\", got 'GET'"


def test_unsupported_url(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", url="/v1/chat")])
    assert only_error(report).startswith(f"{path}:1: unsupported url '/v1/chat'")


def test_several_urls_in_one_file(tmp_path: Path) -> None:
    embedding = line("b", url="/v1/embeddings", body={"model": "gpt-4o-mini", "input": "x"})
    path, report = check(tmp_path, [line("a"), embedding])
    assert only_error(report).startswith(f"{path}:2: url '/v1/embeddings' differs from '{CHAT}' on line 1")


def test_missing_model(tmp_path: Path) -> None:
    body = chat_body()
    del body["model"]
    path, report = check(tmp_path, [line("a", body=body)])
    assert only_error(report).startswith(f"{path}:1: missing body.model")


def test_several_models_in_one_file(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), line("b", body=chat_body(model="gpt-4.1"))])
    assert only_error(report).startswith(f"{path}:2: body.model 'gpt-4.1' differs from 'gpt-4o-mini' on line 1")


# --- custom_id ----------------------------------------------------------------------------------


def test_custom_id_missing(tmp_path: Path) -> None:
    request = json.loads(line("a"))
    del request["custom_id"]
    path, report = check(tmp_path, [json.dumps(request).encode() + b"\n"])
    assert only_error(report) == f"{path}:1: missing top-level key 'custom_id'"


def test_custom_id_not_a_string(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line(7)])
    assert only_error(report) == f"{path}:1: custom_id must be a string, got number"


def test_custom_id_too_long(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("x" * 513)])
    assert only_error(report) == f"{path}:1: custom_id is 513 characters, over the limit of 512"


def test_custom_id_at_the_limit_passes(tmp_path: Path) -> None:
    _, report = check(tmp_path, [line("x" * 512)])
    assert report.ok


def test_duplicate_custom_id_in_one_file(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), line("b"), line("a")])
    assert only_error(report).startswith(f"{path}:3: duplicate custom_id 'a'")


def test_duplicate_custom_id_across_two_files(tmp_path: Path) -> None:
    first = write(tmp_path, [line("a"), line("b")], "part-0.jsonl")
    second = write(tmp_path, [line("c"), line("b")], "part-1.jsonl")
    report = validate_paths([first, second])
    assert only_error(report).startswith(f"{second}:2: duplicate custom_id 'b'")


def test_duplicates_further_apart_than_the_id_window_are_found_at_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path, [line(i) for i in ("a", "b", "c", "d", "b")], "part-0.jsonl")
    second = write(tmp_path, [line(i) for i in ("e", "a", "f", "a")], "part-1.jsonl")
    # spill every two ids, as a big job does every 16k; windows: a b c | d b e | a f a
    report = validate_paths([first, second], id_window=3, id_flush_rows=2)
    message = "duplicate custom_id {!r}; custom_ids must be unique across the job"
    assert report.format().splitlines() == [  # in line order: the one its window caught and the two found late
        f"{first}:5: " + message.format("b"),
        f"{second}:2: " + message.format("a"),
        f"{second}:4: " + message.format("a"),
    ]
    assert [f.errors for f in report.files] == [1, 2] and report.error_count == 3
    assert not report.ok


def test_repeats_are_listed_by_line_up_to_the_problem_limit_and_all_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"k{n}" for n in range(40)]
    first = write(tmp_path, [line(i) for i in ids], "part-0.jsonl")
    second = write(tmp_path, [line(i) for i in [*ids[::-1], "new"]], "part-1.jsonl")  # every id again
    report = validate_paths([first, second], max_problems=5, id_flush_rows=8)  # many spill partitions
    assert report.error_count == 40 and [f.errors for f in report.files] == [0, 40]
    assert [str(p).split(": ")[0] for p in report.problems] == [f"{second}:{n}" for n in range(1, 6)]
    assert str(report.problems[0]).endswith("duplicate custom_id 'k39'; custom_ids must be unique across the job")
    assert report.format().endswith("... and 35 more problems")


def test_a_validator_that_has_reported_takes_no_more_files(tmp_path: Path) -> None:
    validator = Validator()
    validator.validate_lines("a.jsonl", [line("a")])
    assert validator.report().ok
    with pytest.raises(RuntimeError, match="has reported"):
        validator.validate_lines("b.jsonl", [line("a")])


def test_duplicate_found_on_a_line_with_other_errors(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), line("a", method="GET")])
    assert f"{path}:2: duplicate custom_id 'a'; custom_ids must be unique across the job" in map(str, report.problems)


# --- the body -----------------------------------------------------------------------------------


def test_unknown_body_key_max_token(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", body=chat_body(max_token=5))])
    assert only_error(report) == f"{path}:1: invalid body for {CHAT}: unknown key `max_token` at body"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"messages": "hi"}, "expected `array`, got `str` at body.messages"),
        ({"messages": []}, "expected `array` of length >= 1 at body.messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "invalid value 'bot' at body.messages[0].role"),
        ({"messages": [{"content": "x"}]}, "missing required key `role` at body.messages[0]"),
        ({"max_tokens": "5"}, "expected `int | null`, got `str` at body.max_tokens"),
        ({"temperature": "hot"}, "got `str` at body.temperature"),
        ({"logprobs": 1}, "got `int` at body.logprobs"),
        ({"reasoning_effort": "huge"}, "invalid value 'huge' at body.reasoning_effort"),
        ({"parallel_tool_calls": None}, "expected `bool`, got `null` at body.parallel_tool_calls"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "video": "v"}]}]},
            "invalid value 'video' at body.messages[0].content[0].type",
        ),
        (
            {"messages": [{"role": "system", "content": [{"text": "no type"}]}]},
            "missing required key `type` at body.messages[0].content[0]",
        ),
        ({"tools": [{"type": "function", "function": {"description": "d"}}]}, "missing required key `name`"),
        ({"response_format": {"type": "xml"}}, "invalid value 'xml' at body.response_format.type"),
    ],
)
def test_body_of_the_wrong_type(tmp_path: Path, extra: dict[str, Any], fragment: str) -> None:
    path, report = check(tmp_path, [line("a", body=chat_body(**extra))])
    message = only_error(report)
    assert message.startswith(f"{path}:1: invalid body for {CHAT}: ")
    assert fragment in message


def test_body_not_an_object(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", body=["x"])])
    assert only_error(report) == f"{path}:1: body must be a JSON object, got array"


def test_stream_true(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", body=chat_body(stream=True))])
    assert only_error(report).startswith(f"{path}:1: body.stream is true; a batch cannot stream")


def test_responses_body_unknown_key(tmp_path: Path) -> None:
    body = {"model": "gpt-4.1", "input": "hi", "max_tokens": 5}
    path, report = check(tmp_path, [line("a", url="/v1/responses", body=body)])
    assert only_error(report) == f"{path}:1: invalid body for /v1/responses: unknown key `max_tokens` at body"


def test_loose_media_body_still_needs_a_prompt(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a", url="/v1/videos", body={"model": "sora-2"})])
    assert only_error(report) == f"{path}:1: invalid body for /v1/videos: missing required key `prompt` at body"


def test_not_utf8_inside_a_loosely_checked_part(tmp_path: Path) -> None:
    body = b'{"model": "sora-2", "prompt": "p", "seconds": "\xff"}'
    raw = b'{"custom_id": "a", "method": "POST", "url": "/v1/videos", "body": ' + body + b"}\n"
    path, report = check(tmp_path, [raw])
    assert only_error(report).startswith(f"{path}:1: not valid UTF-8")


# --- json_schema --------------------------------------------------------------------------------


def json_schema_format(**spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": spec}


def test_json_schema_without_name(tmp_path: Path) -> None:
    body = chat_body(response_format=json_schema_format(schema={"type": "object"}))
    path, report = check(tmp_path, [line("a", body=body)])
    assert only_error(report) == (
        f"{path}:1: invalid body for {CHAT}: missing required key `name` at body.response_format.json_schema"
    )


def test_json_schema_not_an_object(tmp_path: Path) -> None:
    body = chat_body(response_format=json_schema_format(name="n", schema=["type", "object"]))
    path, report = check(tmp_path, [line("a", body=body)])
    assert only_error(report) == (
        f"{path}:1: body.response_format.json_schema.schema#: a schema must be a JSON object, got array"
    )


STRICT_OK = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["city", "tags"],
    "additionalProperties": False,
}


def test_strict_schema_that_follows_the_rules_passes(tmp_path: Path) -> None:
    body = chat_body(response_format=json_schema_format(name="n", strict=True, schema=STRICT_OK))
    _, report = check(tmp_path, [line("a", body=body)])
    assert report.ok, report.format()


def test_strict_schema_without_additional_properties_false(tmp_path: Path) -> None:
    schema = {**STRICT_OK, "properties": {"address": {"type": "object", "properties": {}, "required": []}}}
    schema["required"] = ["address"]
    body = chat_body(response_format=json_schema_format(name="n", strict=True, schema=schema))
    path, report = check(tmp_path, [line("a", body=body)])
    assert only_error(report) == (
        f"{path}:1: body.response_format.json_schema.schema#/properties/address: "
        'strict mode needs "additionalProperties": false on every object schema'
    )


def test_strict_schema_with_a_property_not_required(tmp_path: Path) -> None:
    schema = {**STRICT_OK, "required": ["city"]}
    body = chat_body(response_format=json_schema_format(name="n", strict=True, schema=schema))
    path, report = check(tmp_path, [line("a", body=body)])
    assert only_error(report) == (
        f'{path}:1: body.response_format.json_schema.schema#: strict mode needs every property in "required"; '
        "missing: tags"
    )


def test_non_strict_schema_may_leave_properties_optional(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = chat_body(response_format=json_schema_format(name="n", schema=schema))
    _, report = check(tmp_path, [line("a", body=body)])
    assert report.ok


def test_strict_function_tool_parameters(tmp_path: Path) -> None:
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": {"type": "object"}}}
    path, report = check(tmp_path, [line("a", body=chat_body(tools=[tool]))])
    assert only_error(report).startswith(f"{path}:1: body.tools[0].function.parameters#: strict mode needs")


def test_strict_schema_in_responses_text_format(tmp_path: Path) -> None:
    fmt = {"type": "json_schema", "name": "n", "strict": True, "schema": {**STRICT_OK, "required": []}}
    body = {"model": "gpt-4.1", "input": "hi", "text": {"format": fmt}}
    path, report = check(tmp_path, [line("a", url="/v1/responses", body=body)])
    assert only_error(report).startswith(f"{path}:1: body.text.format.schema#: strict mode needs every property")


def test_schema_problem_is_reported_on_every_line_that_carries_it(tmp_path: Path) -> None:
    body = chat_body(response_format=json_schema_format(name="n", schema=[]))
    path, report = check(tmp_path, [line("a", body=body), line("b", body=body)])
    assert [problem.line for problem in report.problems] == [1, 2]


# --- embeddings inputs --------------------------------------------------------------------------


def embedding(custom_id: str, value: Any) -> bytes:
    return line(custom_id, url="/v1/embeddings", body={"model": "text-embedding-3-small", "input": value})


def test_embedding_inputs_are_counted(tmp_path: Path) -> None:
    lines = [
        embedding("a", "one"),
        embedding("b", ["two", "three"]),
        embedding("c", [1, 2, 3]),
        embedding("d", [[1], [2]]),
    ]
    _, report = check(tmp_path, lines)
    assert report.ok
    assert report.files[0].embedding_inputs == 1 + 2 + 1 + 2


def test_embedding_inputs_over_the_limit(tmp_path: Path) -> None:
    path, report = check(tmp_path, [embedding("a", ["x"] * 3), embedding("b", ["y"] * 3)], max_embedding_inputs=5)
    assert only_error(report) == f"{path}: 6 embedding inputs, over the limit of 5 per batch; split it into shards"


def test_embedding_input_that_mixes_kinds(tmp_path: Path) -> None:
    path, report = check(tmp_path, [embedding("a", ["x", 1])])
    assert only_error(report).startswith(f"{path}:1: body.input mixes string and token items")


def test_embedding_input_empty_list(tmp_path: Path) -> None:
    path, report = check(tmp_path, [embedding("a", [])])
    assert only_error(report) == f"{path}:1: body.input is an empty list"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "body.input is an empty string; the embeddings endpoint refuses it"),
        (["a", "", "c"], "body.input[1] is an empty string; the embeddings endpoint refuses it"),
        ([[1, 2], []], "body.input[1] is an empty token list; the embeddings endpoint refuses it"),
        (["x"] * 2049, "body.input has 2,049 inputs, over the limit of 2,048"),
    ],
)
def test_embedding_inputs_the_endpoint_refuses(tmp_path: Path, value: Any, problem: str) -> None:
    path, report = check(tmp_path, [embedding("a", ["fine"]), embedding("b", value)])
    assert only_error(report) == f"{path}:2: {problem}"


def test_embedding_input_of_2048_strings_or_one_long_token_list_is_fine(tmp_path: Path) -> None:
    _, report = check(tmp_path, [embedding("a", ["x"] * 2048), embedding("b", list(range(5000)))])
    assert report.ok and report.files[0].embedding_inputs == 2049


# --- per-file limits ----------------------------------------------------------------------------


def test_too_many_requests(tmp_path: Path) -> None:
    path, report = check(tmp_path, [line("a"), line("b"), line("c")], max_requests=2)
    assert only_error(report) == f"{path}: 3 requests, over the limit of 2 per file; split it into shards"


def test_too_many_bytes(tmp_path: Path) -> None:
    lines = [line("a"), line("b")]
    path, report = check(tmp_path, lines, max_bytes=100)
    size = len(b"".join(lines))
    assert only_error(report).startswith(f"{path}: {size:,} bytes, over the limit of 100 bytes")


def test_empty_file(tmp_path: Path) -> None:
    path, report = check(tmp_path, [])
    assert only_error(report) == f"{path}: empty file: no requests (the Batch API refuses an empty file)"


def test_file_of_blank_lines_is_empty_too(tmp_path: Path) -> None:
    path, report = check(tmp_path, [b"\n", b"\n"])
    assert [str(problem).split(";")[0] for problem in report.problems] == [
        f"{path}:1: blank line",
        f"{path}:2: blank line",
        f"{path}: empty file: no requests (the Batch API refuses an empty file)",
    ]


# --- warnings -----------------------------------------------------------------------------------


def test_crlf_is_one_warning_not_an_error(tmp_path: Path) -> None:
    lines = [line("a").replace(b"\n", b"\r\n"), line("b").replace(b"\n", b"\r\n")]
    path, report = check(tmp_path, lines)
    assert report.ok
    assert (report.error_count, report.warning_count) == (0, 1)
    (warning,) = report.problems
    assert warning.severity == "warning"
    assert str(warning).startswith(f"{path}:1: warning: CRLF line endings")
    assert report.files[0].crlf_lines == 2


# --- where lines come from ----------------------------------------------------------------------


def test_validate_lines_takes_raw_lines_and_a_label() -> None:
    validator = Validator()
    summary = validator.validate_lines("s3://bucket/batch/part-0.jsonl", iter([line("a"), line("a")]))
    assert summary.requests == 2
    assert str(validator.report().problems[0]).startswith("s3://bucket/batch/part-0.jsonl:2: duplicate")


def test_validate_file_uses_the_label_given(tmp_path: Path) -> None:
    path = write(tmp_path, [b"nope\n"])
    validator = Validator()
    validator.validate_file(Path(path), label="input/part-0.jsonl")
    assert str(validator.report().problems[0]).startswith("input/part-0.jsonl:1: not valid JSON")


def test_not_utf8_inside_a_schema_kept_raw(tmp_path: Path) -> None:
    raw = line("a", body=chat_body(response_format=json_schema_format(name="n", schema={"description": "ZZ"})))
    path, report = check(tmp_path, [raw.replace(b"ZZ", b"\xff")])
    assert only_error(report) == f"{path}:1: body.response_format.json_schema.schema#: not valid UTF-8"
