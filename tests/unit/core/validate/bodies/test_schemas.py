"""The JSON Schema checks on their own: pointers, recursion, and the cache."""

from __future__ import annotations

import msgspec

from airflow_provider_openai_batch.core.validate.bodies.schemas import SchemaChecker, schema_problems, strict_problems


def strict(schema: dict) -> list[str]:
    return list(strict_problems(schema))


def test_root_must_be_an_object_schema() -> None:
    assert strict({"type": "array", "items": {"type": "string"}}) == [
        '#: strict mode needs an object schema at the root ("type": "object")'
    ]


def test_nested_objects_in_items_anyof_and_defs_are_named_by_pointer() -> None:
    closed = {"additionalProperties": False, "required": []}
    schema = {
        "type": "object",
        **closed,
        "properties": {},
        "$defs": {"a/b": {"type": "object", "properties": {}, "required": []}},
        "anyOf": [{"type": "object", **closed}, {"type": ["object", "null"], "required": []}],
    }
    schema["properties"] = {"list": {"type": "array", "items": {"type": "object", "required": []}}}
    schema["required"] = ["list"]
    pointers = [problem.split(":")[0] for problem in strict(schema)]
    assert pointers == ["#/properties/list/items", "#/$defs/a~1b", "#/anyOf/1"]


def test_required_must_be_a_list() -> None:
    schema = {"type": "object", "additionalProperties": False, "properties": {}, "required": "x"}
    assert strict(schema) == ['#: "required" must be a list of property names']


def test_problems_per_schema_are_capped() -> None:
    properties = {f"p{index}": {"type": "object"} for index in range(20)}
    schema = {"type": "object", "additionalProperties": False, "properties": properties, "required": list(properties)}
    problems = schema_problems(msgspec.json.encode(schema), strict=True)
    assert len(problems) == 11
    assert problems[-1].endswith("further problems in this schema not shown")


def test_nullable_parameters_may_be_null() -> None:
    assert schema_problems(b"null", strict=True, nullable=True) == ()
    assert schema_problems(b"null", strict=False) == ("#: a schema must be a JSON object, got null",)


def test_checker_caches_by_bytes_and_flags() -> None:
    checker = SchemaChecker()
    raw = msgspec.json.decode(b'{"s": {"type": "object"}}', type=dict[str, msgspec.Raw])["s"]
    first = checker(raw, strict=True)
    assert first is checker(raw, strict=True)
    assert checker(raw, strict=False) == ()
    assert first and first[0].startswith('#: strict mode needs "additionalProperties"')


def test_invalid_utf8_inside_a_raw_schema() -> None:
    assert schema_problems(b'{"description": "\xff"}', strict=False) == ("#: not valid UTF-8",)
