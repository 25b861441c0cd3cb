"""Offline token estimates: about four characters a token, at least one.

The emulator needs plausible numbers for ``usage`` and for the enqueued-token limit, not exact
ones; real tokenizers would need downloads this package must not depend on. Bodies are read
defensively because the input file is checked before any request body is.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4
# OpenAI cookbook estimate for chat prompts: per-message overhead and the reply primer.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMER_TOKENS = 3


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (part.get("text") for part in content if isinstance(part, dict))
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


def chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return text_tokens(str(messages))
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + text_tokens(content_text(message.get("content")))
        total += TOKENS_PER_NAME if "name" in message else 0
    return total


def responses_input_tokens(body: dict[str, Any]) -> int:
    """Tokens of ``instructions`` plus ``input`` (a string or a list of message items)."""
    instructions = body.get("instructions")
    extra = text_tokens(instructions) if isinstance(instructions, str) else 0
    items = body.get("input")
    if isinstance(items, list):
        return extra + chat_prompt_tokens(items)
    return extra + text_tokens(items if isinstance(items, str) else "")


def inputs_tokens(inputs: Any) -> int:
    """Tokens of an ``input``/``prompt`` value: a string, a list of strings, or token arrays."""
    if isinstance(inputs, str):
        return text_tokens(inputs)
    if isinstance(inputs, list) and inputs and all(isinstance(item, int) for item in inputs):
        return len(inputs)
    if isinstance(inputs, list):
        return sum(inputs_tokens(item) for item in inputs) if inputs else 1
    if isinstance(inputs, dict):
        return text_tokens(content_text([inputs]))
    return 1


def request_input_tokens(endpoint: str, body: Any) -> int:
    """Estimated prompt tokens of one request, used for the enqueued-token limit."""
    if not isinstance(body, dict):
        return 1
    if endpoint == "/v1/chat/completions":
        return chat_prompt_tokens(body.get("messages"))
    if endpoint == "/v1/responses":
        return responses_input_tokens(body)
    if endpoint == "/v1/completions":
        return inputs_tokens(body.get("prompt"))
    return inputs_tokens(body.get("input"))
