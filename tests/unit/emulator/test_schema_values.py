"""Schema-driven values: whatever the schema uses, the value validates against it."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_provider_openai_batch.emulator.schema_values import value_for_schema

TREE = {
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
            },
            "required": ["name", "children"],
            "additionalProperties": False,
        }
    },
    "$ref": "#/$defs/node",
}

SCHEMAS = {
    "enum": {"type": "string", "enum": ["a", "b", "c"]},
    "const": {"const": 42},
    "bounded integer": {"type": "integer", "minimum": 10, "maximum": 12},
    "exclusive number": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "multiple of": {"type": "integer", "minimum": 1, "maximum": 100, "multipleOf": 7},
    "negative only": {"type": "number", "maximum": -5},
    "string lengths": {"type": "string", "minLength": 30, "maxLength": 40},
    "short string": {"type": "string", "maxLength": 3},
    "formats": {
        "type": "object",
        "properties": {f: {"type": "string", "format": f} for f in ("date-time", "date", "email", "uri", "uuid")},
    },
    "nullable": {"type": ["string", "null"]},
    "any of": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
    "all of": {"allOf": [{"properties": {"a": {"type": "boolean"}}}, {"properties": {"b": {"type": "integer"}}}]},
    "array bounds": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 5},
    "unique enum items": {"type": "array", "items": {"enum": ["x", "y"]}, "uniqueItems": True, "maxItems": 2},
    "recursive": TREE,
    "empty": {},
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_value_validates_against_schema(name):
    schema = SCHEMAS[name]

    for seed in ("one", "two", "three"):
        jsonschema.validate(value_for_schema(schema, seed), schema, format_checker=jsonschema.FormatChecker())


def test_value_depends_only_on_the_seed():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}

    assert value_for_schema(schema, "same") == value_for_schema(schema, "same")
    assert any(value_for_schema(schema, "same") != value_for_schema(schema, f"other {i}") for i in range(5))


def test_recursive_schema_stops_growing():
    value = value_for_schema(TREE, "seed")

    depth, node = 0, value
    while node["children"]:
        depth, node = depth + 1, node["children"][0]
    assert depth < 10
