from __future__ import annotations

from enum import StrEnum

import msgspec
import pytest
from pydantic import BaseModel, Field

from airflow_provider_openai_batch.core.validate.bodies import SchemaChecker
from airflow_provider_openai_batch.core.validate.bodies.schemas import strict_problems
from airflow_provider_openai_batch.core.validate.structured import (
    SchemaError,
    json_schema_format,
    response_format_params,
    strict_schema,
)


class Sentiment(StrEnum):
    positive = "positive"
    negative = "negative"


class Aspect(BaseModel):
    name: str
    score: float | None = None


class Review(BaseModel):
    sentiment: Sentiment = Field(description="overall")
    aspects: list[Aspect]
    summary: str | None = None
    primary: Aspect | None = None


def objects(schema):
    """Every object schema in ``schema``, at any depth."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def test_pydantic_model_becomes_a_strict_valid_schema_including_defs():
    fmt = json_schema_format(Review)
    schema = fmt["schema"]
    assert fmt["name"] == "Review" and fmt["strict"] is True
    assert list(strict_problems(schema)) == []
    assert sorted(schema["required"]) == ["aspects", "primary", "sentiment", "summary"]
    assert schema["$defs"]["Aspect"]["required"] == ["name", "score"]
    assert all(node["additionalProperties"] is False for node in objects(schema))
    assert "default" not in str(schema["properties"]["summary"])
    # the checker the validator uses agrees
    assert SchemaChecker()(msgspec.Raw(msgspec.json.encode(schema)), True) == ()


def test_ref_with_sibling_keywords_is_inlined():
    schema = json_schema_format(Review)["schema"]
    sentiment = schema["properties"]["sentiment"]
    assert "$ref" not in sentiment
    assert sentiment["description"] == "overall" and sentiment["enum"] == ["positive", "negative"]


def test_a_dict_schema_is_closed_recursively_and_left_unchanged_otherwise():
    source = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "object", "properties": {"t": {"type": "string"}}}}},
    }
    schema = strict_schema(source)
    assert schema["required"] == ["tags"]
    assert schema["properties"]["tags"]["items"] == {
        "type": "object",
        "properties": {"t": {"type": "string"}},
        "additionalProperties": False,
        "required": ["t"],
    }
    assert "required" not in source  # the caller's dict is not modified


def test_a_free_form_mapping_cannot_be_strict_and_the_error_names_it():
    class Bag(BaseModel):
        counts: dict[str, int]

    with pytest.raises(SchemaError, match=r"#/properties/counts: an object with free-form keys"):
        json_schema_format(Bag)


def test_chat_gets_response_format_and_responses_get_text_format():
    chat = response_format_params("/v1/chat/completions", Review)
    assert chat["response_format"]["type"] == "json_schema"
    assert chat["response_format"]["json_schema"]["strict"] is True
    responses = response_format_params("/v1/responses", Review)
    fmt = responses["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Review" and fmt["strict"] is True
    assert fmt["schema"] == chat["response_format"]["json_schema"]["schema"]


def test_a_full_response_format_dict_is_accepted_and_explicit_non_strict_is_kept():
    given = {"type": "json_schema", "json_schema": {"name": "x y", "schema": {"type": "object"}, "strict": False}}
    fmt = json_schema_format(given)
    assert fmt == {"name": "x_y", "schema": {"type": "object"}, "strict": False}
    assert json_schema_format({"type": "json_object"}) is None
    assert response_format_params("/v1/chat/completions", {"type": "json_object"}) == {
        "response_format": {"type": "json_object"}
    }


def test_response_format_on_another_endpoint_is_an_error():
    with pytest.raises(SchemaError, match="not /v1/embeddings"):
        response_format_params("/v1/embeddings", Review)
