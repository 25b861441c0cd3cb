"""Checks on the JSON Schemas a request carries (``json_schema`` formats and function tools).

A schema must be a JSON object. With ``strict: true`` (Structured Outputs) the API also needs,
for every object schema, ``"additionalProperties": false`` and every property listed in
``required``, and an object at the root; a schema breaking that fails the whole request line
hours later, so it is caught here, named by its JSON pointer.

The same schema usually rides on every line of a file, so results are cached by the schema's raw
bytes (``msgspec.Raw``): a million lines cost one walk and, per line, a byte comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

_CACHE_SIZE = 1024
_RECENT = 4  # a line rarely carries more schemas than this (format + a few tools)
_MAX_PROBLEMS_PER_SCHEMA = 10
_CHILD_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_CHILD_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_CHILD_SCHEMAS = ("items", "additionalProperties", "not", "contains")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _children(schema: dict[str, Any], pointer: str) -> Iterator[tuple[str, Any]]:
    for keyword in _CHILD_MAPS:
        value = schema.get(keyword)
        if isinstance(value, dict):
            for name, child in value.items():
                yield f"{pointer}/{keyword}/{_escape(str(name))}", child
    for keyword in _CHILD_LISTS:
        value = schema.get(keyword)
        if isinstance(value, list):
            for index, child in enumerate(value):
                yield f"{pointer}/{keyword}/{index}", child
    for keyword in _CHILD_SCHEMAS:
        value = schema.get(keyword)
        if isinstance(value, dict):
            yield f"{pointer}/{keyword}", value
        elif keyword == "items" and isinstance(value, list):
            for index, child in enumerate(value):
                yield f"{pointer}/items/{index}", child


def _is_object_schema(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind):
        return True
    return kind is None and "properties" in schema


def _strict_object_problems(schema: dict[str, Any], pointer: str) -> Iterator[str]:
    if schema.get("additionalProperties") is not False:
        yield f'{pointer}: strict mode needs "additionalProperties": false on every object schema'
    properties = schema.get("properties") or {}
    required = schema.get("required") or []
    if not isinstance(required, list):
        yield f'{pointer}: "required" must be a list of property names'
        return
    missing = [str(name) for name in properties if name not in required] if isinstance(properties, dict) else []
    if missing:
        yield f'{pointer}: strict mode needs every property in "required"; missing: {", ".join(missing)}'


def strict_problems(schema: dict[str, Any]) -> Iterator[str]:
    """Pointer-named breaches of the Structured Outputs rules, depth first."""
    if not _is_object_schema(schema):
        yield '#: strict mode needs an object schema at the root ("type": "object")'
    stack: list[tuple[str, Any]] = [("#", schema)]
    while stack:
        pointer, node = stack.pop()
        if not isinstance(node, dict):
            continue
        if _is_object_schema(node):
            yield from _strict_object_problems(node, pointer)
        stack.extend(reversed(list(_children(node, pointer))))


def schema_problems(raw: bytes, strict: bool, nullable: bool = False) -> tuple[str, ...]:
    """Problems of one raw schema: not an object, or (if strict) the strict rules."""
    try:
        schema = msgspec.json.decode(raw)  # valid JSON: the line decoder parsed these bytes
    except UnicodeDecodeError:  # ... but ``Raw`` skips the UTF-8 check
        return ("#: not valid UTF-8",)
    if schema is None and nullable:
        return ()
    if not isinstance(schema, dict):
        return (f"#: a schema must be a JSON object, got {_json_type(schema)}",)
    if not strict:
        return ()
    found = []
    for problem in strict_problems(schema):
        found.append(problem)
        if len(found) == _MAX_PROBLEMS_PER_SCHEMA:
            found.append("#: ... further problems in this schema not shown")
            break
    return tuple(found)


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


class SchemaChecker:
    """``schema_problems``, cached: a few recent schemas compared as ``Raw`` (no copy), then a
    bounded dict keyed by the schema's bytes."""

    def __init__(self) -> None:
        self._recent: list[tuple[msgspec.Raw, bool, bool, tuple[str, ...]]] = []
        self._cache: dict[tuple[bytes, bool, bool], tuple[str, ...]] = {}

    def __call__(self, raw: msgspec.Raw, strict: bool, nullable: bool = False) -> tuple[str, ...]:
        """Problems as ``#/pointer: message``; the caller prefixes where the schema sits."""
        for seen, seen_strict, seen_nullable, found in self._recent:
            if seen_strict is strict and seen_nullable is nullable and seen == raw:
                return found
        found = self._lookup(raw, strict, nullable)
        self._recent = [(raw, strict, nullable, found), *self._recent[: _RECENT - 1]]
        return found

    def _lookup(self, raw: msgspec.Raw, strict: bool, nullable: bool) -> tuple[str, ...]:
        key = (bytes(raw), strict, nullable)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            found = self._cache[key] = schema_problems(*key)
        return found
