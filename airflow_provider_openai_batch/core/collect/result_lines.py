"""The lines of a batch's output and error files, decoded straight into typed structs.

Only the fields reconciliation reads are declared; msgspec skips the rest without building them,
which makes a typed decode faster than a bare ``json.loads`` of the same line. The structs cover
the bodies of chat completions, responses, completions, embeddings and moderations; a body of
another shape fails the typed decode and is read by :data:`decode_loose` instead (status code and
raw text), so a new field type from the service never loses a row.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

import msgspec


class Details(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class Usage(msgspec.Struct, gc=False):
    # chat/completions/embeddings name them prompt/completion; responses name them input/output.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens_details: Details | None = None
    input_tokens_details: Details | None = None
    completion_tokens_details: Details | None = None
    output_tokens_details: Details | None = None


class Message(msgspec.Struct, gc=False):
    content: Any = None
    refusal: str | None = None


class Choice(msgspec.Struct, gc=False):
    message: Message | None = None
    text: str | None = None
    finish_reason: str | None = None


class Part(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    refusal: str | None = None


class Item(msgspec.Struct, gc=False):
    type: str | None = None
    content: list[Part] | None = None


class DataItem(msgspec.Struct, gc=False):
    embedding: list[float] | str | None = None


class ApiError(msgspec.Struct, gc=False):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class Incomplete(msgspec.Struct, gc=False):
    reason: str | None = None


class Body(msgspec.Struct, gc=False):
    object: str | None = None
    model: str | None = None
    created: int | None = None
    created_at: int | float | None = None
    status: str | None = None
    choices: list[Choice] | None = None
    output: list[Item] | None = None
    data: list[DataItem] | None = None
    usage: Usage | None = None
    error: ApiError | None = None
    incomplete_details: Incomplete | None = None
    results: Any = None


NO_BODY = Body()


class Response(msgspec.Struct, gc=False):
    status_code: int
    request_id: str | None = None
    body: Body | None = None


class LineError(msgspec.Struct, gc=False):
    code: str | None = None
    message: str | None = None


class Line(msgspec.Struct, gc=False):
    custom_id: str
    response: Response | None = None
    error: LineError | None = None


class LooseResponse(msgspec.Struct, gc=False):
    status_code: int
    request_id: Any = None
    body: msgspec.Raw = msgspec.Raw(b"null")


class LooseLine(msgspec.Struct, gc=False):
    """A line whose body has a shape we do not know: the status code and the raw body still count."""

    custom_id: str
    response: LooseResponse | None = None
    error: Any = None


decode_line = msgspec.json.Decoder(Line).decode
decode_lines = msgspec.json.Decoder(list[Line]).decode  # a JSON array of lines
decode_loose = msgspec.json.Decoder(LooseLine).decode
decode_json = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

# (content, refusal, finish_reason, parsed, embedding)
Answer = tuple[str | None, str | None, str | None, Any, list[float] | None]


Tokens = tuple[int, int, int, int]
_NO_TOKENS: Tokens = (0, 0, 0, 0)


def tokens(usage: Usage | None) -> Tokens:
    """
    (input, cached, output, reasoning) tokens, whichever names the endpoint uses.

    The only reading of usage: reconciliation maps it over whole chunks of lines, so it is kept
    to plain branches (no ``min``, no nested calls).
    """
    if usage is None:
        return _NO_TOKENS
    inputs = usage.input_tokens
    if inputs is None:
        inputs = usage.prompt_tokens or 0
    outputs = usage.output_tokens
    if outputs is None:
        outputs = usage.completion_tokens or 0
    details = usage.prompt_tokens_details or usage.input_tokens_details
    cached = 0 if details is None else details.cached_tokens or 0
    details = usage.completion_tokens_details or usage.output_tokens_details
    reasoning = 0 if details is None else details.reasoning_tokens or 0
    return inputs, cached if cached <= inputs else inputs, outputs, reasoning


def extract(body: Body) -> Answer:
    """The answer itself, by the shape of the body."""
    if body.choices:
        choice = body.choices[0]
        message = choice.message
        if message is not None:
            return text(message.content), message.refusal, choice.finish_reason, None, None
        return choice.text, None, choice.finish_reason, None, None
    if body.object == "response":
        return _extract_response(body)
    if body.data and body.data[0].embedding is not None:
        return None, None, None, None, vector(body.data[0].embedding)
    if body.results is not None:
        return None, None, None, body.results, None
    return None, None, None, None, None


def _extract_response(body: Body) -> Answer:
    texts: list[str] = []
    refusal = None
    for item in body.output or ():
        for part in item.content or ():
            if part.type == "output_text":
                texts.append(part.text or "")
            elif part.type == "refusal":
                refusal = part.refusal
    incomplete = body.incomplete_details
    finish_reason = (incomplete.reason if incomplete else None) or body.status
    return ("".join(texts) if texts else None), refusal, finish_reason, None, None


def answered_at(body: Body) -> int | None:
    """When the service answered: ``created`` (chat, completions) or ``created_at`` (responses)."""
    if body.created is not None:
        return body.created
    return None if body.created_at is None else int(body.created_at)


def vector(embedding: list[float] | str) -> list[float]:
    """Embeddings asked for with ``encoding_format="base64"`` arrive as little-endian float32 bytes."""
    if isinstance(embedding, str):
        values = array("f", base64.b64decode(embedding))
        if sys.byteorder != "little":
            values.byteswap()
        return values.tolist()
    return embedding


def text(value: Any) -> str | None:
    """A text field as text: a structured value (a list of content parts…) as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return _encode(value).decode()
