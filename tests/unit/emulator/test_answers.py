"""Answers per endpoint, read back from result files: they parse with the official openai models."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Literal

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel

from tests.unit.emulator.helpers import Batches, chat_line, request_line

SENTIMENT = "Classify the sentiment of the review as positive/negative/neutral. Answer with one word."


class Address(BaseModel):
    city: str
    zip_code: str | None


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    score: float
    stars: int
    tags: list[str]
    verified: bool
    address: Address
    previous: list[Address]


REVIEW_SCHEMA = to_strict_json_schema(Review)


def _bodies(batches: Batches, url: str, bodies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    batch = batches.run([request_line(f"r{i}", url, body) for i, body in enumerate(bodies)], endpoint=url)
    assert batch.request_counts.completed == len(bodies), batches.lines(batch.error_file_id)
    return {cid: line["response"]["body"] for cid, line in batches.results(batch).items()}


def test_chat_completion_parses_strictly_and_picks_a_listed_label(batches: Batches):
    reviews = ["I loved it", "Terrible service", "It was fine", "Would buy again"]
    lines = [chat_line(f"r{i}", text, system=SENTIMENT) for i, text in enumerate(reviews)]

    batch = batches.run(lines)

    results = batches.results(batch)
    for line in results.values():
        completion = ChatCompletion.model_validate(line["response"]["body"], strict=True)
        assert completion.choices[0].message.content in {"positive", "negative", "neutral"}
        assert completion.choices[0].message.refusal is None
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.prompt_tokens > 0
        assert completion.usage.completion_tokens_details is not None
        assert completion.model == "gpt-4o-mini"


def test_chat_answers_are_deterministic(batches: Batches):
    lines = [chat_line("a", "Same words", system=SENTIMENT), chat_line("b", "Same words", system=SENTIMENT)]

    results = batches.results(batches.run(lines))

    contents = [r["response"]["body"]["choices"][0]["message"]["content"] for r in results.values()]
    assert contents[0] == contents[1]


def test_chat_json_schema_content_is_valid_against_the_schema(batches: Batches):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "review", "schema": REVIEW_SCHEMA, "strict": True},
    }
    lines = [chat_line(f"r{i}", f"review {i}", response_format=response_format) for i in range(3)]

    results = batches.results(batches.run(lines))

    for line in results.values():
        completion = ChatCompletion.model_validate(line["response"]["body"], strict=True)
        content = json.loads(completion.choices[0].message.content or "")
        jsonschema.validate(content, REVIEW_SCHEMA)
        Review.model_validate(content)


def test_chat_max_tokens_truncates_with_finish_reason_length(batches: Batches):
    line = chat_line("r", "a long question " * 20, max_completion_tokens=3)

    (result,) = batches.results(batches.run([line])).values()

    choice = result["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) <= 12
    assert result["response"]["body"]["usage"]["completion_tokens"] <= 3


def test_responses_body_parses_strictly_with_output_text(batches: Batches):
    bodies = _bodies(
        batches, "/v1/responses", [{"model": "gpt-4.1-mini", "input": "Say hi", "instructions": SENTIMENT}]
    )

    response = Response.model_validate(bodies["r0"], strict=True)

    assert response.status == "completed"
    assert response.output_text in {"positive", "negative", "neutral"}
    assert response.usage is not None and response.usage.total_tokens > 0


def test_responses_json_schema_via_text_format(batches: Batches):
    text = {"format": {"type": "json_schema", "name": "review", "schema": REVIEW_SCHEMA, "strict": True}}
    messages = [{"role": "user", "content": [{"type": "input_text", "text": "A review"}]}]

    bodies = _bodies(batches, "/v1/responses", [{"model": "gpt-4.1-mini", "input": messages, "text": text}])

    response = Response.model_validate(bodies["r0"], strict=True)
    jsonschema.validate(json.loads(response.output_text), REVIEW_SCHEMA)


def test_responses_max_output_tokens_makes_it_incomplete(batches: Batches):
    bodies = _bodies(batches, "/v1/responses", [{"model": "gpt-4.1-mini", "input": "x " * 100, "max_output_tokens": 2}])

    response = Response.model_validate(bodies["r0"], strict=True)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(
    ("model", "extra", "dimensions"),
    [
        ("text-embedding-3-small", {}, 1536),
        ("text-embedding-3-large", {}, 3072),
        ("text-embedding-3-small", {"dimensions": 256}, 256),
    ],
)
def test_embeddings_are_unit_vectors_of_the_right_size(batches: Batches, model, extra, dimensions):
    bodies = _bodies(batches, "/v1/embeddings", [{"model": model, "input": ["alpha", "beta"], **extra}])

    parsed = CreateEmbeddingResponse.model_validate(bodies["r0"], strict=True)

    assert [len(item.embedding) for item in parsed.data] == [dimensions, dimensions]
    assert [item.index for item in parsed.data] == [0, 1]
    assert sum(v * v for v in parsed.data[0].embedding) == pytest.approx(1.0)
    assert parsed.usage.prompt_tokens == parsed.usage.total_tokens > 0


def test_embeddings_are_deterministic_per_text(batches: Batches):
    body = {"model": "text-embedding-3-small", "input": "same text", "dimensions": 64}
    bodies = _bodies(batches, "/v1/embeddings", [body, body, {**body, "input": "other text"}])

    vectors = [bodies[f"r{i}"]["data"][0]["embedding"] for i in range(3)]

    assert vectors[0] == vectors[1]
    assert vectors[0] != vectors[2]


def test_embeddings_base64_decodes_to_the_float_vector(batches: Batches):
    body = {"model": "text-embedding-3-small", "input": "text", "dimensions": 8}
    bodies = _bodies(batches, "/v1/embeddings", [body, {**body, "encoding_format": "base64"}])

    floats = bodies["r0"]["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(bodies["r1"]["data"][0]["embedding"]))

    assert decoded == pytest.approx(floats, abs=1e-6)


def test_completions_body_parses_strictly(batches: Batches):
    bodies = _bodies(batches, "/v1/completions", [{"model": "gpt-3.5-turbo-instruct", "prompt": ["Once", "Twice"]}])

    completion = Completion.model_validate(bodies["r0"], strict=True)

    assert [choice.index for choice in completion.choices] == [0, 1]
    assert completion.usage is not None and completion.usage.completion_tokens <= 32


def test_moderations_body_parses_strictly_and_flags_listed_words(batches: Batches):
    bodies = _bodies(batches, "/v1/moderations", [{"input": ["have a nice day", "I will kill it"]}])

    moderation = ModerationCreateResponse.model_validate(bodies["r0"], strict=True)

    assert moderation.model == "omni-moderation-latest"
    assert [result.flagged for result in moderation.results] == [False, True]
    assert moderation.results[1].categories.violence is True
