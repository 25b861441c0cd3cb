"""Deterministic response bodies for each endpoint a batch may call.

Every body has the shape of the official ``openai`` models (``ChatCompletion``, ``Response``,
``CreateEmbeddingResponse``, ``Completion``, ``ModerationCreateResponse``). A request missing a
required field gets a 400 body, as the real endpoint would give it inside a batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_openai_batch.core.limits import MAX_EMBEDDING_INPUTS_PER_REQUEST
from airflow_provider_openai_batch.emulator.records import TokenUsage
from airflow_provider_openai_batch.emulator.replies import digest_int, reply_text, structured_reply, truncate
from airflow_provider_openai_batch.emulator.tokens import content_text, prompt_tokens, text_tokens
from airflow_provider_openai_batch.emulator.vectors import default_dimensions, to_base64, unit_vector

SYSTEM_FINGERPRINT = "fp_emulator"
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
# The legacy completions endpoint writes at most 16 tokens unless told otherwise.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    usage: TokenUsage = field(default_factory=TokenUsage)


class RequestRejected(Exception):
    """The request body is invalid for its endpoint; answered as a 400 line."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def answer(endpoint: str, body: dict[str, Any], key: str, now: int, prompt: int | None = None) -> Answer:
    """The answer to one request; ``key`` makes the ids unique, ``now`` is the ``created`` time.

    ``prompt`` is the request's prompt tokens when the caller counted them already (the scan of
    the input file does), so each request is tokenized once.
    """
    if prompt is None:
        prompt = prompt_tokens(endpoint, body)
    try:
        return _HANDLERS[endpoint](body, key, now, prompt)
    except RequestRejected as rejected:
        return error_answer(400, rejected.message, "invalid_request_error", rejected.param)


def error_answer(
    status_code: int, message: str, type: str, param: str | None = None, code: str | None = None
) -> Answer:
    return Answer(status_code, {"error": {"message": message, "type": type, "param": param, "code": code}})


def _require(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in body:
        raise RequestRejected(f"Missing required parameter: '{name}'.", name)
    if not isinstance(body[name], kind):
        raise RequestRejected(f"Invalid type for '{name}'.", name)
    return body[name]


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n", 1)
    return n if isinstance(n, int) and n > 0 else 1


def _completion_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _formatted_reply(fmt: Any, param: str, instructions: str, user_text: str) -> str:
    """The reply for a ``response_format``/``text.format``; ``fmt`` is already flattened."""
    kind = fmt.get("type", "text") if isinstance(fmt, dict) else "text"
    if kind == "text":
        return reply_text(instructions, user_text)
    if kind == "json_object":
        return json.dumps({"answer": reply_text(instructions, user_text)})
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(fmt.get("name"), str) or not isinstance(schema, dict):
            raise RequestRejected(f"'{param}' of type json_schema needs a 'name' and a 'schema'.", param)
        return structured_reply(schema, f"{instructions}\n{user_text}")
    raise RequestRejected(f"Invalid value for '{param}.type': {kind!r}.", f"{param}.type")


# Chat completions


def _chat_texts(messages: list[Any]) -> tuple[str, str]:
    """``(instructions, user_text)``: system/developer messages, and the last user message."""
    dicts = [m for m in messages if isinstance(m, dict)]
    instructions = [content_text(m.get("content")) for m in dicts if m.get("role") in ("system", "developer")]
    users = [content_text(m.get("content")) for m in dicts if m.get("role") == "user"]
    return "\n".join(instructions), users[-1] if users else ""


def _chat(body: dict[str, Any], key: str, now: int, prompt: int) -> Answer:
    model = _require(body, "model", str)
    messages = _require(body, "messages", list)
    if not messages:
        raise RequestRejected("'messages' must contain at least one message.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestRejected(f"Invalid type for 'messages[{index}]': expected an object.", f"messages[{index}]")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        fmt = {"type": "json_schema", **(fmt.get("json_schema") or {})}
    text = _formatted_reply(fmt, "response_format", *_chat_texts(messages))
    text, cut = truncate(text, body.get("max_completion_tokens", body.get("max_tokens")))
    n = _choice_count(body)
    choices = [_chat_choice(index, text, cut) for index in range(n)]
    completion = text_tokens(text) * n
    reply = {
        "id": f"chatcmpl-{key}",
        "object": "chat.completion",
        "created": now,
        "model": model,
        "choices": choices,
        "usage": _completion_usage(prompt, completion),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    return Answer(200, reply, TokenUsage(prompt, completion))


def _chat_choice(index: int, text: str, cut: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    return {"index": index, "message": message, "logprobs": None, "finish_reason": "length" if cut else "stop"}


# Responses


def _responses_texts(body: dict[str, Any]) -> tuple[str, str]:
    items = body.get("input")
    given = body.get("instructions")
    instructions = [given] if isinstance(given, str) else []
    if isinstance(items, str):
        return "\n".join(instructions), items
    if not isinstance(items, list):
        raise RequestRejected("'input' must be a string or a list of input items.", "input")
    system, user = _chat_texts(items)
    return "\n".join([*instructions, system]).strip(), user


def _responses(body: dict[str, Any], key: str, now: int, prompt: int) -> Answer:
    model = _require(body, "model", str)
    _require(body, "input", (str, list))
    text_config = body.get("text")
    fmt = (text_config.get("format") if isinstance(text_config, dict) else None) or {"type": "text"}
    text = _formatted_reply(fmt, "text.format", *_responses_texts(body))
    text, cut = truncate(text, body.get("max_output_tokens"))
    completion = text_tokens(text)
    status = "incomplete" if cut else "completed"
    reply = {
        **_response_settings(body, fmt),
        "id": f"resp_{key}",
        "object": "response",
        "created_at": now,
        "completed_at": None if cut else now,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "model": model,
        "output": [_response_message(key, text, status)],
        "usage": _response_usage(prompt, completion),
    }
    return Answer(200, reply, TokenUsage(prompt, completion))


def _response_settings(body: dict[str, Any], fmt: dict[str, Any]) -> dict[str, Any]:
    """The request settings a Response object echoes back."""
    instructions = body.get("instructions")
    metadata = body.get("metadata")
    return {
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "temperature": _number(body, "temperature", 1.0),
        "top_p": _number(body, "top_p", 1.0),
        "text": {"format": fmt},
        "tool_choice": "auto",
        "tools": [],
        "truncation": "disabled",
        "user": None,
    }


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise RequestRejected(f"Invalid type for '{name}': expected a number.", name)
    return float(value)


def _response_message(key: str, text: str, status: str) -> dict[str, Any]:
    content = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": f"msg_{key}", "status": status, "role": "assistant", "content": [content]}


def _response_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


# Embeddings


def _embedding_texts(inputs: Any) -> list[str]:
    """Each input as text: strings as they are, token arrays by their JSON form."""
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(item, int) for item in inputs):
        return [json.dumps(inputs)]
    if isinstance(inputs, list) and inputs and all(isinstance(item, str | list) for item in inputs):
        return [item if isinstance(item, str) else json.dumps(item) for item in inputs]
    raise RequestRejected("'input' must be a non-empty string, list of strings or token arrays.", "input")


def _embeddings(body: dict[str, Any], key: str, now: int, prompt: int) -> Answer:
    model = _require(body, "model", str)
    texts = _embedding_texts(_require(body, "input", (str, list)))
    if "" in texts or "[]" in texts:
        raise RequestRejected("'$.input' is invalid: it cannot be an empty string or an empty token list.", "input")
    if len(texts) > MAX_EMBEDDING_INPUTS_PER_REQUEST:
        raise RequestRejected(f"'$.input' is invalid: at most {MAX_EMBEDDING_INPUTS_PER_REQUEST} inputs.", "input")
    dimensions = body.get("dimensions", default_dimensions(model))
    if not isinstance(dimensions, int) or dimensions < 1:
        raise RequestRejected("'dimensions' must be a positive integer.", "dimensions")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestRejected("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    data = [_embedding(index, text, dimensions, encoding) for index, text in enumerate(texts)]
    usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    return Answer(200, {"object": "list", "data": data, "model": model, "usage": usage}, TokenUsage(prompt, 0))


def _embedding(index: int, text: str, dimensions: int, encoding: str) -> dict[str, Any]:
    vector = unit_vector(text, dimensions)
    return {"object": "embedding", "index": index, "embedding": to_base64(vector) if encoding == "base64" else vector}


# Completions (legacy)


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        return _embedding_texts(prompt)
    raise RequestRejected("'prompt' must be a non-empty string or list.", "prompt")


def _completions(body: dict[str, Any], key: str, now: int, prompt: int) -> Answer:
    model = _require(body, "model", str)
    prompts = _prompts(_require(body, "prompt", (str, list)))
    n = _choice_count(body)
    max_tokens = body.get("max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)
    choices: list[dict[str, Any]] = []
    completion = 0
    for given in prompts:
        text, cut = truncate(" " + reply_text("", given), max_tokens)
        completion += text_tokens(text) * n
        for _ in range(n):
            finish = "length" if cut else "stop"
            choices.append({"index": len(choices), "text": text, "logprobs": None, "finish_reason": finish})
    reply = {
        "id": f"cmpl-{key}",
        "object": "text_completion",
        "created": now,
        "model": model,
        "choices": choices,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return Answer(200, reply, TokenUsage(prompt, completion))


# Moderations

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# The emulator's whole "classifier": a text is flagged in a category when it contains one of
# these words. Every other score is a small number derived from the text's hash.
FLAG_WORDS = {
    "violence": ("kill", "murder", "attack"),
    "hate": ("hate",),
    "harassment": ("idiot", "stupid"),
    "self-harm": ("suicide",),
}


def _moderation_texts(inputs: Any) -> list[str]:
    if isinstance(inputs, list) and inputs and all(isinstance(item, dict) for item in inputs):
        return [content_text(inputs)]  # multi-modal parts make one input
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs):
        return _embedding_texts(inputs)
    raise RequestRejected("'input' must be a non-empty string, list of strings or list of parts.", "input")


def _moderation_result(text: str) -> dict[str, Any]:
    words = set(re.findall(r"[a-z]+", text.lower()))
    flagged = {name for name, triggers in FLAG_WORDS.items() if words & set(triggers)}
    scores = {
        name: 0.9 if name in flagged else (digest_int(f"{name}|{text}") % 1000) / 100_000
        for name in MODERATION_CATEGORIES
    }
    return {
        "flagged": bool(flagged),
        "categories": {name: name in flagged for name in MODERATION_CATEGORIES},
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


def _moderations(body: dict[str, Any], key: str, now: int, prompt: int) -> Answer:
    model = body.get("model", DEFAULT_MODERATION_MODEL)
    texts = _moderation_texts(_require(body, "input", (str, list)))
    reply = {"id": f"modr-{key}", "model": model, "results": [_moderation_result(text) for text in texts]}
    return Answer(200, reply, TokenUsage(prompt, 0))


_HANDLERS: dict[str, Callable[[dict[str, Any], str, int, int], Answer]] = {
    "/v1/chat/completions": _chat,
    "/v1/responses": _responses,
    "/v1/embeddings": _embeddings,
    "/v1/completions": _completions,
    "/v1/moderations": _moderations,
}
SUPPORTED_ENDPOINTS: tuple[str, ...] = tuple(_HANDLERS)
