"""Struct bases for request bodies: what every body struct shares, said once.

Unknown keys are errors (``forbid_unknown_fields``) because a typo such as ``max_token`` is
otherwise dropped silently and the request runs with the default. ``gc=False`` is safe (decoded
JSON holds no cycles) and keeps a million short-lived structs out of the cycle collector.

Field defaults follow the ``openai`` request TypedDicts: a key typed ``Optional[X]`` there may be
``null`` here (default ``None``); a key typed plain ``X`` may be absent but not ``null`` (default
``UNSET``).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, UnsetType

from airflow_provider_openai_batch.core.limits import MAX_TOKEN_LIMIT

__all__ = ["UNSET", "Body", "Choices", "Loose", "Tagged", "TokenLimit", "UnsetType"]

TokenLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKEN_LIMIT)]
# ``n``: how many answers a request asks for (the API takes 1 to 128).
Choices = Annotated[int, msgspec.Meta(ge=1, le=128)]


class Body(msgspec.Struct, forbid_unknown_fields=True, gc=False, kw_only=True):
    """An object with a fixed set of keys."""


class Tagged(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, gc=False, kw_only=True):
    """One variant of a union told apart by its ``type`` key (subclasses set ``tag=``)."""


class Loose(msgspec.Struct, tag_field="type", gc=False, kw_only=True):
    """A ``type``-tagged variant whose other keys are not checked (documented where used)."""
