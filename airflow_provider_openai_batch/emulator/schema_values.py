"""A deterministic JSON value valid against a JSON schema, for Structured Outputs answers.

Covers what OpenAI's strict mode accepts: objects (every listed property is written), arrays,
strings (with ``format``, ``minLength``/``maxLength``), numbers and integers (with bounds and
``multipleOf``), booleans, null, ``enum``/``const``, ``anyOf``/``oneOf``/``allOf`` and local
``$ref``s (``#/$defs/...``). ``pattern`` is not honoured. Each choice hashes the seed (the
request's input) with the value's path, so the same request always gets the same answer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

# Recursive schemas (a tree node with children) stop growing past this depth.
MAX_DEPTH = 6
DEFAULT_ARRAY_ITEMS = 2
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "duration": "PT1H",
}


def value_for_schema(schema: Mapping[str, Any], seed: str) -> Any:
    """Build a value that validates against ``schema``, chosen deterministically from ``seed``."""
    return _Generator(schema, seed).value(schema, "$", 0)


class _Generator:
    def __init__(self, root: Mapping[str, Any], seed: str) -> None:
        self.root = root
        self.seed = seed

    def pick(self, path: str, modulo: int) -> int:
        digest = hashlib.sha256(f"{self.seed}|{path}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % max(modulo, 1)

    def value(self, schema: Any, path: str, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return "example"
        if "$ref" in schema:
            return self.value(self.resolve(schema["$ref"]), path, depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            options = list(schema["enum"])
            return options[self.pick(path, len(options))]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self.choose_option(schema[key], depth), path, depth)
        if schema.get("allOf"):
            return self.value(self.merge(schema), path, depth)
        return self.typed(schema, self.type_of(schema, depth), path, depth)

    def typed(self, schema: Mapping[str, Any], kind: str, path: str, depth: int) -> Any:
        if kind == "object":
            return self.object(schema, path, depth)
        if kind == "array":
            return self.array(schema, path, depth)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return self.pick(path, 2) == 0
        if kind == "null":
            return None
        return self.string(schema, path)

    def resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            key = part.replace("~1", "/").replace("~0", "~")
            node = node.get(key, {}) if isinstance(node, Mapping) else {}
        return node

    def merge(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Fold ``allOf`` parts into one schema (properties and required lists are combined)."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = self.resolve(part["$ref"]) if isinstance(part, Mapping) and "$ref" in part else part
            if not isinstance(part, Mapping):
                continue
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **value}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *value]
                else:
                    merged.setdefault(key, value)
        return merged

    def choose_option(self, options: list[Any], depth: int) -> Any:
        """The first non-null option, or null once a recursive schema is deep enough."""
        nulls = [o for o in options if isinstance(o, Mapping) and o.get("type") == "null"]
        others = [o for o in options if o not in nulls]
        if nulls and (depth >= MAX_DEPTH or not others):
            return nulls[0]
        return others[0] if others else {}

    def type_of(self, schema: Mapping[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            concrete = [k for k in kind if k != "null"]
            return "null" if not concrete or ("null" in kind and depth >= MAX_DEPTH) else concrete[0]
        if isinstance(kind, str):
            return kind
        if "properties" in schema:
            return "object"
        return "array" if "items" in schema else "string"

    def object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties = schema.get("properties") or {}
        return {name: self.value(sub, f"{path}.{name}", depth + 1) for name, sub in properties.items()}

    def array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, DEFAULT_ARRAY_ITEMS)))
        size = low if depth >= MAX_DEPTH else min(max(DEFAULT_ARRAY_ITEMS, low), high)
        prefix = schema.get("prefixItems") or []
        items: list[Any] = []
        for index in range(size):
            sub = prefix[index] if index < len(prefix) else schema.get("items", {})
            item = self.value(sub, f"{path}[{index}]", depth + 1)
            if schema.get("uniqueItems") and item in items and len(items) >= low:
                continue
            items.append(item)
        return items

    def string(self, schema: Mapping[str, Any], path: str) -> str:
        if schema.get("format") in _FORMATS:
            return _FORMATS[schema["format"]]
        if schema.get("format") == "uuid":
            digest = hashlib.sha256(f"{self.seed}|{path}".encode()).hexdigest()
            return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
        name = path.rsplit(".", 1)[-1].strip("$[]0123456789").replace("_", " ") or "text"
        text = f"sample {name} {self.pick(path, 1000)}"
        low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
        text = text.ljust(low, "x")
        return text[: int(high)] if high is not None else text

    def integer(self, schema: Mapping[str, Any], path: str) -> int:
        low, high = _bounds(schema, default_span=100)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            return int(self.multiple(low, high, step, path))
        return math.ceil(low) + self.pick(path, math.floor(high) - math.ceil(low) + 1)

    def number(self, schema: Mapping[str, Any], path: str) -> float:
        low, high = _bounds(schema, default_span=1)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            return float(self.multiple(low, high, step, path))
        return round(low + (high - low) * (self.pick(path, 10_000) / 10_000), 4)

    def multiple(self, low: float, high: float, step: float, path: str) -> float:
        first = math.ceil(low / step)
        count = max(math.floor(high / step) - first + 1, 1)
        return (first + self.pick(path, count)) * step


def _bounds(schema: Mapping[str, Any], default_span: int) -> tuple[float, float]:
    """The inclusive range a number may take; exclusive bounds are nudged inwards by one."""
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], int | float):
        low = schema["exclusiveMinimum"] + (1 if schema.get("type") == "integer" else 0.0001)
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], int | float):
        high = schema["exclusiveMaximum"] - (1 if schema.get("type") == "integer" else 0.0001)
    if low is None:
        low = 0 if high is None or high >= 0 else high - default_span
    if high is None:
        high = low + default_span
    return float(low), float(max(high, low))
