"""Checks on the "string, strings, tokens or token arrays" inputs that a struct cannot express.

msgspec allows one array type per union, so ``input`` / ``prompt`` decode as a list of mixed
items; these functions reject the mixes the API rejects and count what the limits count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _kind(item: Any) -> str:
    kind = type(item)
    if kind is str:
        return "string"
    if kind is int:
        return "token"
    if kind is list:
        return "token array"
    return "object"


def mixed_kinds(items: Sequence[Any]) -> str | None:
    """Why a list input is not one of: strings, tokens, token arrays, objects (None when it is)."""
    if not items:
        return "is an empty list"
    first = type(items[0])
    if all(type(item) is first for item in items):
        return None
    kinds = sorted({_kind(item) for item in items})
    return f"mixes {' and '.join(kinds)} items; use one kind per request"


def input_count(value: str | Sequence[Any]) -> int:
    """How many inputs the API counts: a string or one token list is one, a list of them is many."""
    if isinstance(value, str) or (value and type(value[0]) is int):
        return 1
    return len(value)
