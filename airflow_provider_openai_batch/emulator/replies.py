"""Deterministic reply text: the emulator's stand-in for a model.

The rule, meant to make demos look sensible:

1. If the instructions (system/developer prompt; else the user's text) list labels — slash- or
   pipe-separated (``positive/negative/neutral``), after "one of" (``one of: spam, ham``), or as
   the list an instruction ends with (``Answer positive, negative or neutral.``, ``Classify the
   sentiment as positive, negative, or neutral``, ``Labels: bug, feature, question``, ``either
   spam or ham``) — the reply is one of those labels, chosen by a hash of the user's text.
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
# An instruction that ends in the list of its answers: "Answer a, b or c", "Classify … as a, b, or c".
_LEADS = re.compile(
    r"\b(?:answer(?:\s+with)?|reply(?:\s+with)?|respond(?:\s+with)?|(?:classify|label|tag|rate)\b[^.\n;:]{0,40}?\bas"
    r"|labels?|categories|classes|options|choose(?:\s+from)?|pick(?:\s+from)?|either)\b[:\s]*([^.\n;]+)",
    re.IGNORECASE,
)
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
    for pattern in (_ONE_OF, _LEADS):
        for found in pattern.finditer(text):
            listed = _split_list(found.group(1))
            if len(listed) >= 2:
                return listed
    return ()


def _split_list(listed: str) -> tuple[str, ...]:
    """``a, b, or c`` -> its items, when every item is a short phrase (else nothing)."""
    listed = re.sub(r"^\s*either\b", "", listed, flags=re.IGNORECASE)
    parts = [part.strip(" \t'\"`*()") for part in re.split(r",|\bor\b|\band\b", listed)]
    labels = [part for part in parts if part]
    if len(labels) < 2 or any(len(label.split()) > 3 for label in labels):
        return ()
    return tuple(labels)


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
