"""Structured Outputs: a JSON Schema, from a dict or a pydantic model, made valid for ``strict: true``.

With ``strict: true`` the API only takes schemas where every object, at any depth and in
``$defs``, says ``"additionalProperties": false`` and lists every property in ``required``. A
pydantic model's schema breaks both (optional fields are not required; extra keys are not
forbidden), and the API rejects such a request line hours later, when the batch runs. So the
schema is rewritten here, once, before any record is read: optional fields stay nullable but
become required, ``$ref`` with sibling keywords is inlined (the API rejects siblings), and
``"default": null`` is dropped. A free-form mapping (``dict[str, X]``) cannot be expressed in strict
mode and is an error naming its JSON pointer.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Final

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

_NAME_OK: Final = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_NAME: Final = 64
_CHILD_MAPS: Final = ("properties", "$defs", "definitions", "patternProperties")
_CHILD_LISTS: Final = ("anyOf", "allOf", "oneOf", "prefixItems")
_CHILD_SCHEMAS: Final = ("items", "not", "contains")
CHAT_COMPLETIONS: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"


class SchemaError(OpenAIBatchInputError):
    """A response schema cannot be used with Structured Outputs; the message names where."""


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` that meets the strict-mode rules (see the module docstring)."""
    root = copy.deepcopy(dict(schema))
    _strictify(root, root, "#")
    return root


def _strictify(node: dict[str, Any], root: dict[str, Any], pointer: str) -> None:
    if "$ref" in node and len(node) > 1:
        _inline_ref(node, root, pointer)
    if node.get("default", 0) is None:
        del node["default"]
    if _is_object(node):
        _close_object(node, pointer)
    for child_pointer, child in _children(node, pointer):
        _strictify(child, root, child_pointer)


def _inline_ref(node: dict[str, Any], root: dict[str, Any], pointer: str) -> None:
    """Replace ``{"$ref": ..., "description": ...}`` by the target merged with its siblings."""
    ref = node.pop("$ref")
    target = _resolve(root, ref, pointer)
    merged = {**copy.deepcopy(target), **node}
    node.clear()
    node.update(merged)


def _resolve(root: dict[str, Any], ref: Any, pointer: str) -> dict[str, Any]:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(f"{pointer}: only local references (#/$defs/...) can be inlined, got {ref!r}")
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise SchemaError(f"{pointer}: reference {ref!r} points nowhere")
        target = target[part]
    if not isinstance(target, dict):
        raise SchemaError(f"{pointer}: reference {ref!r} is not a schema")
    return target


def _is_object(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or (kind is None and "properties" in node)


def _close_object(node: dict[str, Any], pointer: str) -> None:
    extra = node.get("additionalProperties", False)
    if extra is not False:
        raise SchemaError(
            f"{pointer}: an object with free-form keys (additionalProperties {extra!r}, e.g. a dict field) "
            "cannot be used with strict Structured Outputs; model it with named properties"
        )
    node["additionalProperties"] = False
    properties = node.get("properties")
    node["required"] = list(properties) if isinstance(properties, Mapping) else []
    if not isinstance(properties, Mapping):
        node.setdefault("properties", {})


def _children(node: dict[str, Any], pointer: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for keyword in _CHILD_MAPS:
        value = node.get(keyword)
        if isinstance(value, dict):
            found.extend(
                (f"{pointer}/{keyword}/{name}", child) for name, child in value.items() if isinstance(child, dict)
            )
    for keyword in _CHILD_LISTS:
        value = node.get(keyword)
        if isinstance(value, list):
            found.extend(
                (f"{pointer}/{keyword}/{i}", child) for i, child in enumerate(value) if isinstance(child, dict)
            )
    for keyword in _CHILD_SCHEMAS:
        value = node.get(keyword)
        if isinstance(value, dict):
            found.append((f"{pointer}/{keyword}", value))
    return found


def _is_pydantic_model(source: Any) -> bool:
    return isinstance(source, type) and callable(getattr(source, "model_json_schema", None))


def _name(candidate: Any) -> str:
    cleaned = _NAME_OK.sub("_", str(candidate or "")).strip("_")
    return (cleaned or "response")[:_MAX_NAME]


def json_schema_format(source: Any, name: str | None = None) -> dict[str, Any] | None:
    """``{name, schema, strict, [description]}`` from a pydantic model or a schema dict.

    A dict may be a bare JSON Schema, a chat ``response_format`` (``{"type": "json_schema",
    "json_schema": {...}}``) or a Responses ``text.format`` (``{"type": "json_schema", "schema": ...}``).
    Returns None for a format without a schema (``{"type": "json_object"}`` or ``"text"``). An
    explicit ``"strict": false`` is kept as given.
    """
    if _is_pydantic_model(source):
        return {
            "name": _name(name or source.__name__),
            "schema": strict_schema(source.model_json_schema()),
            "strict": True,
        }
    if not isinstance(source, Mapping):
        raise SchemaError(f"response_format must be a pydantic model class or a dict, got {type(source).__name__}")
    kind = source.get("type")
    if kind in ("json_object", "text"):
        return None
    if kind == "json_schema":
        spec = source.get("json_schema", source)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise SchemaError('response_format of type "json_schema" needs a "schema" object')
        strict = spec.get("strict", True) is not False
        schema = strict_schema(spec["schema"]) if strict else dict(spec["schema"])
        found = {"name": _name(name or spec.get("name") or schema.get("title")), "schema": schema, "strict": strict}
        if spec.get("description"):
            found["description"] = spec["description"]
        return found
    return {"name": _name(name or source.get("title")), "schema": strict_schema(source), "strict": True}


def response_format_params(endpoint: str, source: Any, name: str | None = None) -> dict[str, Any]:
    """The body parameter that asks ``endpoint`` for output matching ``source``.

    Chat Completions take ``response_format``; the Responses API takes ``text.format``.
    """
    fmt = json_schema_format(source, name)
    plain = dict(source) if isinstance(source, Mapping) else {}
    if endpoint == CHAT_COMPLETIONS:
        return {"response_format": plain if fmt is None else {"type": "json_schema", "json_schema": fmt}}
    if endpoint == RESPONSES:
        return {"text": {"format": plain if fmt is None else {"type": "json_schema", **fmt}}}
    raise SchemaError(f"response_format applies to {CHAT_COMPLETIONS} and {RESPONSES}, not {endpoint}")
