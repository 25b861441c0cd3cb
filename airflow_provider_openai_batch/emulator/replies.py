"""Deterministic reply text: the emulator's stand-in for a model.

The rule, meant to make demos look sensible:

1. If the instructions (system/developer prompt; else the user's text) list labels, either
   slash- or pipe-separated (``positive/negative/neutral``) or after "one of"
   (``one of: spam, ham``), the reply is one of those labels, chosen by a hash of the user's text.
2. Otherwise the reply is ``Emulated reply to: <the start of the user's text>``.

Structured Outputs replies are JSON built from the schema (see ``schema_values``). The same input
always gives the same reply, like a model at temperature 0 that never changes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_openai_batch.emulator.schema_values import value_for_schema
from airflow_provider_openai_batch.emulator.tokens import CHARS_PER_TOKEN

_URL = re.compile(r"\S+://\S+")
_SLASH_LIST = re.compile(r"[A-Za-z][\w-]*(?:[ \t]*[/|][ \t]*[A-Za-z][\w-]*)+")
_ONE_OF = re.compile(r"\bone of\b[:\s]*([^.\n;]+)", re.IGNORECASE)
_CONNECTORS = {"and", "or"}
SNIPPET_CHARS = 60


def digest_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@functools.lru_cache(maxsize=256)
def listed_labels(text: str) -> tuple[str, ...]:
    """The labels a prompt offers, by the rule in this module's docstring (empty if none).

    Cached: a batch usually repeats one system prompt on every line.
    """
    text = _URL.sub(" ", text)
    for match in _SLASH_LIST.finditer(text):
        labels = [part.strip() for part in re.split(r"[/|]", match.group(0))]
        if len(labels) >= 2 and not _CONNECTORS & {label.lower() for label in labels}:
            return tuple(labels)
    found = _ONE_OF.search(text)
    if found:
        parts = re.split(r",|\bor\b|\band\b", found.group(1))
        labels = [part.strip(" \t'\"`*()") for part in parts]
        labels = [label for label in labels if label and len(label.split()) <= 3]
        if len(labels) >= 2:
            return tuple(labels)
    return ()


def reply_text(instructions: str, user_text: str) -> str:
    labels = listed_labels(instructions) or listed_labels(user_text)
    if labels:
        return labels[digest_int(user_text) % len(labels)]
    snippet = " ".join(user_text.split())
    if len(snippet) > SNIPPET_CHARS:
        snippet = snippet[:SNIPPET_CHARS].rstrip() + "..."
    return f"Emulated reply to: {snippet}" if snippet else "Emulated reply."


def structured_reply(schema: Mapping[str, Any], seed: str) -> str:
    return json.dumps(value_for_schema(schema, seed), ensure_ascii=False)


def truncate(text: str, max_tokens: Any) -> tuple[str, bool]:
    """Cut the reply to ``max_tokens`` (about four characters each); True when it was cut."""
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        return text, False
    limit = max_tokens * CHARS_PER_TOKEN
    return (text[:limit], True) if len(text) > limit else (text, False)
