"""Token counts for ``usage`` and the enqueued-token limit.

Prompt tokens are counted as the build's estimate counts them (``core.tokens``: the model's
tiktoken encoding, loaded once per process from package data, and the per-message overhead), so
a job's estimate and the usage the emulator reports agree. Replies are the emulator's own
invention, so their tokens stay a cheap estimate: about four characters a token, at least one.
"""

from __future__ import annotations

import math
from typing import Any

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.tokens import count_input_tokens

CHARS_PER_TOKEN = 4


def text_tokens(text: str) -> int:
    """Tokens of a reply the emulator wrote."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


def prompt_tokens(endpoint: str, body: Any) -> int:
    """Prompt tokens of one request; 0 for a body too malformed to count (it is answered 400).

    The input file is scanned before any body is checked, so the body may be anything.
    """
    if not isinstance(body, dict):
        return 0
    try:
        return count_input_tokens(endpoint, body)
    except (AttributeError, TypeError, ValueError, RecursionError, OpenAIBatchInputError):
        return 0
