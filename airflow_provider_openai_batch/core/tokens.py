"""Offline token counts for Batch API request bodies.

``tiktoken`` downloads its encoding files on first use, which fails on workers without internet
(and here). The two encodings the current models use, ``o200k_base`` and ``cl100k_base``, ship
inside this package (``data/*.tiktoken.gz``, the same bytes tiktoken downloads); they are
checked against the SHA-256 that tiktoken itself pins before use, so nothing here touches the
network. Imports nothing from Airflow.

The counts are estimates for budgeting, not billing: chat-style inputs follow the OpenAI
cookbook rule (3 tokens per message, the tokens of each value, 1 per ``name``, 3 for the reply
primer); images get a fixed allowance and audio/file parts are not counted.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import itertools
import json
import logging
import operator
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, get_args

import tiktoken
from tiktoken_ext import openai_public

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_TOKEN_LIMIT

log = logging.getLogger(__name__)

EncodingName = Literal["o200k_base", "cl100k_base"]
DEFAULT_ENCODING: Final[EncodingName] = "o200k_base"

# Model-name prefix -> encoding; the longest matching prefix wins, so "gpt-4o" beats "gpt-4".
_ENCODING_BY_PREFIX: Final[Mapping[str, EncodingName]] = {
    "gpt-4o": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "omni-moderation": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
    "davinci-002": "cl100k_base",
    "babbage-002": "cl100k_base",
}

# When a request sets no output limit the model may write up to its own maximum, so the budget
# estimate assumes that maximum (an upper bound; setting the limit tightens the estimate).
_MAX_OUTPUT_BY_PREFIX: Final[Mapping[str, int]] = {
    "gpt-4o": 16_384,
    "gpt-4o-2024-05-13": 4_096,
    "chatgpt-4o": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.5": 16_384,
    "gpt-5": 128_000,
    "o1": 100_000,
    "o3": 100_000,
    "o4": 100_000,
    "gpt-4-turbo": 4_096,
    "gpt-4": 8_192,
    "gpt-3.5": 4_096,
}
# Unknown models: assume a large modern limit rather than under-estimate the bill.
UNKNOWN_MODEL_MAX_OUTPUT: Final = 128_000
# /v1/completions writes at most 16 tokens when max_tokens is absent (the API's own default).
COMPLETIONS_DEFAULT_MAX_TOKENS: Final = 16

TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMER_TOKENS: Final = 3
# Images cannot be measured offline: "low" detail is a flat 85 tokens; anything else is charged
# as a 1024x1024 image at high detail on the gpt-4o family (85 + 4 tiles x 170).
IMAGE_TOKENS_LOW: Final = 85
IMAGE_TOKENS_DEFAULT: Final = 765

_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})
_IMAGE_PART_TYPES: Final = frozenset({"image_url", "input_image"})
_UNCOUNTED_PART_TYPES: Final = frozenset({"input_audio", "file", "input_file", "audio"})
_OUTPUT_LIMIT_FIELDS: Final = ("max_completion_tokens", "max_output_tokens", "max_tokens")


@dataclass(frozen=True, slots=True)
class RequestTokens:
    """Estimated tokens of one request: prompt tokens and the most it may generate.

    ``output_limit_assumed`` is true when the body set no output limit and
    ``max_output_tokens`` is the model's maximum (see ``default_max_output_tokens``).
    """

    input_tokens: int
    max_output_tokens: int
    output_limit_assumed: bool = False


# ---------------------------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------------------------


def encoding_name_for_model(model: str | None) -> EncodingName:
    """The encoding a model uses; unknown models get ``o200k_base`` (and one log line)."""
    return _encoding_name(model or "")


@functools.cache
def _encoding_name(model: str) -> EncodingName:
    name = _longest_prefix(_ENCODING_BY_PREFIX, _base_model(model))
    if name is None:
        log.warning("No known tokenizer for model %r; counting tokens with %s.", model, DEFAULT_ENCODING)
        return DEFAULT_ENCODING
    return name


@functools.cache
def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The tiktoken ``Encoding`` for ``model``, loaded from package data (no network)."""
    return get_encoding(encoding_name_for_model(model))


@functools.cache
def get_encoding(name: EncodingName) -> tiktoken.Encoding:
    """Build ``o200k_base`` or ``cl100k_base`` from the files shipped in this package.

    The split regex and special tokens are read from tiktoken's own constructor at run time so
    they stay in step with the installed tiktoken. That constructor fetches its ranks through a
    global ``load_tiktoken_bpe``; calling a copy of it whose globals point that name at our
    packaged file leaves tiktoken untouched for every other caller and is thread-safe.
    """
    if name not in get_args(EncodingName):
        raise ValueError(f"Encoding {name!r} is not packaged; use one of {get_args(EncodingName)}.")
    constructors: Mapping[str, Callable[[], dict[str, Any]]] = openai_public.ENCODING_CONSTRUCTORS
    constructor = constructors.get(name)
    if constructor is None or "load_tiktoken_bpe" not in constructor.__code__.co_names:
        raise RuntimeError(
            f"tiktoken {tiktoken.__version__} no longer builds {name!r} through load_tiktoken_bpe; "
            "the offline loader in airflow_provider_openai_batch.core.tokens needs updating."
        )

    def load_packaged(_url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        return _read_packaged_ranks(name, expected_hash)

    offline_constructor = types.FunctionType(
        constructor.__code__,
        {**constructor.__globals__, "load_tiktoken_bpe": load_packaged},
        constructor.__name__,
        constructor.__defaults__,
        constructor.__closure__,
    )
    encoding = tiktoken.Encoding(**offline_constructor())
    # The Rust core keeps its own copy of the 200k ranks; tiktoken keeps the Python dict it was
    # built from only to pickle the encoding, which nothing here does: dropping it frees ~27 MB of
    # every build task's peak.
    if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
        encoding._mergeable_ranks = {}
    return encoding


def _read_packaged_ranks(name: str, expected_hash: str | None) -> dict[bytes, int]:
    resource = resources.files("airflow_provider_openai_batch").joinpath("data", f"{name}.tiktoken.gz")
    data = gzip.decompress(resource.read_bytes())
    if expected_hash is not None and hashlib.sha256(data).hexdigest() != expected_hash:
        raise RuntimeError(
            f"Packaged encoding {name} does not match the SHA-256 tiktoken expects ({expected_hash}); "
            "reinstall airflow-provider-openai-batch."
        )
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def count_text_tokens(text: str, model: str | None = None) -> int:
    """Tokens of a plain string (special-token text is counted as ordinary text)."""
    return _text_counter(encoding_name_for_model(model))(text)


_TextCounter = Callable[[str], int]
# Batch inputs repeat the same system prompt, instructions and tool schemas on every line;
# remembering recent counts skips re-encoding them (hashing a string is far cheaper).
TEXT_COUNT_CACHE_SIZE: Final = 4096


@functools.cache
def _text_counter(name: EncodingName) -> _TextCounter:
    encode = get_encoding(name).encode_ordinary

    @functools.lru_cache(maxsize=TEXT_COUNT_CACHE_SIZE)
    def count(text: str) -> int:
        return len(encode(text))

    return count


# ---------------------------------------------------------------------------------------------
# Per-record text of a templated job, in bulk
# ---------------------------------------------------------------------------------------------

TokenEstimate = Literal["exact", "sample"]
# ``sample``: the first records, and every SAMPLE_EVERY-th after them, are encoded with tiktoken.
SAMPLE_EXACT_FIRST: Final = 10_000
SAMPLE_EVERY: Final = 100


class TextTokenCounter:
    """Tokens of the strings rendered from records (one column of a chunk at a time).

    Encoding is the one cost of an estimate that grows with the text (measured here: about 3.5M
    tokens/s, so some 10 µs for a 40-token review, against ~1 µs to build its request line). So:

    - ``exact``: every string is encoded with tiktoken.
    - ``sample``: the strings of the first ``SAMPLE_EXACT_FIRST`` records and of every
      ``SAMPLE_EVERY``-th record after them are encoded; each other string is estimated from its
      length at the tokens per character measured so far on the encoded ones, kept apart for
      ASCII and other text (the ratio differs several-fold between scripts). A job of up to
      10,000 records is therefore counted exactly.

    ``exact_strings`` and ``estimated_strings`` say how the total was reached.
    """

    def __init__(self, model: str | None, mode: TokenEstimate = "exact") -> None:
        if mode not in get_args(TokenEstimate):
            raise OpenAIBatchInputError(f"token_estimate must be one of {get_args(TokenEstimate)}, got {mode!r}")
        self.mode = mode
        self._encode = get_encoding(encoding_name_for_model(model)).encode_ordinary
        self.exact_strings = 0
        self.estimated_strings = 0
        # Tokens and characters encoded so far, [other text, ASCII text].
        self._tokens = [0, 0]
        self._chars = [0, 0]

    def count_many(self, values: list[str], start: int) -> list[int]:
        """Token counts of ``values``, the strings of records ``start``, ``start + 1``, ..."""
        if self.mode == "exact":
            self.exact_strings += len(values)
            return list(map(len, map(self._encode, values)))
        if start + len(values) <= SAMPLE_EXACT_FIRST:
            return self._encoded(values)
        counts = self._estimated(values)
        if counts is None:
            return [self._one(value, start + offset) for offset, value in enumerate(values)]
        first_sampled = (-start) % SAMPLE_EVERY
        for offset in itertools.chain(
            range(max(0, SAMPLE_EXACT_FIRST - start)), range(first_sampled, len(values), SAMPLE_EVERY)
        ):
            if offset < len(values):
                counts[offset] = self._encoded([values[offset]])[0]
                self.estimated_strings -= 1
        return counts

    def _encoded(self, values: list[str]) -> list[int]:
        counts = list(map(len, map(self._encode, values)))
        for value, tokens in zip(values, counts, strict=True):
            kind = value.isascii()
            self._tokens[kind] += tokens
            self._chars[kind] += len(value)
        self.exact_strings += len(values)
        return counts

    def _estimated(self, values: list[str]) -> list[int] | None:
        """Length-based counts, in C; None when a kind of text in ``values`` was never measured."""
        kinds = list(map(str.isascii, values))
        present = set(kinds)
        if not all(self._chars[kind] for kind in present):
            return None
        ratios = tuple(self._tokens[kind] / self._chars[kind] if self._chars[kind] else 0.0 for kind in (0, 1))
        self.estimated_strings += len(values)
        per_char = map(ratios.__getitem__, kinds)
        return list(map(round, map(operator.mul, map(len, values), per_char)))

    def _one(self, value: str, index: int) -> int:
        kind = value.isascii()
        if index < SAMPLE_EXACT_FIRST or index % SAMPLE_EVERY == 0 or not self._chars[kind]:
            return self._encoded([value])[0]
        self.estimated_strings += 1
        return round(len(value) * self._tokens[kind] / self._chars[kind])


# ---------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------


def count_request_tokens(url: str, body: Mapping[str, Any]) -> RequestTokens:
    """Estimate the input tokens and the output ceiling of one Batch API request line."""
    url = url.rstrip("/")
    input_tokens = count_input_tokens(url, body)
    if url in ("/v1/embeddings", "/v1/moderations"):
        return RequestTokens(input_tokens, 0)
    model = body.get("model")
    return _with_output(input_tokens, model if isinstance(model, str) else None, url, body, _output_copies(url, body))


def count_input_tokens(url: str, body: Mapping[str, Any]) -> int:
    """The prompt tokens of one request line, as the estimate counts them (the emulator too)."""
    counter = _COUNTERS.get(url.rstrip("/"))
    if counter is None:
        raise OpenAIBatchInputError(
            f"Cannot estimate tokens for url {url!r}: estimates cover {', '.join(sorted(_COUNTERS))}. "
            "Drop the cost limit for this batch or count its tokens yourself."
        )
    model = body.get("model")
    return counter(_text_counter(encoding_name_for_model(model if isinstance(model, str) else None)), body)


def default_max_output_tokens(model: str | None, url: str = "/v1/chat/completions") -> int:
    """Output ceiling assumed for a request that sets no limit of its own."""
    url = url.rstrip("/")
    if url in ("/v1/embeddings", "/v1/moderations"):
        return 0
    if url == "/v1/completions":
        return COMPLETIONS_DEFAULT_MAX_TOKENS
    limit = _longest_prefix(_MAX_OUTPUT_BY_PREFIX, _base_model(model or ""))
    return UNKNOWN_MODEL_MAX_OUTPUT if limit is None else limit


def _count_chat(count: _TextCounter, body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    tokens = sum(_message_tokens(count, m) for m in messages) + REPLY_PRIMER_TOKENS
    return tokens + _json_tokens(count, body, ("tools", "functions", "response_format"))


def _count_responses(count: _TextCounter, body: Mapping[str, Any]) -> int:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    tokens = sum(
        _message_tokens(count, i) if isinstance(i, Mapping) and "role" in i else _value_tokens(count, i)
        for i in items or []
    )
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        tokens += _message_tokens(count, {"role": "system", "content": instructions})
    return tokens + REPLY_PRIMER_TOKENS + _json_tokens(count, body, ("tools", "text"))


def _count_completions(count: _TextCounter, body: Mapping[str, Any]) -> int:
    return _input_tokens(count, body.get("prompt", "")) + _value_tokens(count, body.get("suffix"))


def _count_embeddings(count: _TextCounter, body: Mapping[str, Any]) -> int:
    return _input_tokens(count, body.get("input", ""))


def _count_moderations(count: _TextCounter, body: Mapping[str, Any]) -> int:
    # Images sent for moderation are free and not measured in tokens: count the text only.
    value = body.get("input", "")
    parts = value if isinstance(value, list) else [value]
    text = [p for p in parts if not (isinstance(p, Mapping) and p.get("type") in _IMAGE_PART_TYPES)]
    return _value_tokens(count, text)


_Counter = Callable[[_TextCounter, Mapping[str, Any]], int]
_COUNTERS: Final[Mapping[str, _Counter]] = {
    "/v1/chat/completions": _count_chat,
    "/v1/responses": _count_responses,
    "/v1/completions": _count_completions,
    "/v1/embeddings": _count_embeddings,
    "/v1/moderations": _count_moderations,
}


def _output_copies(url: str, body: Mapping[str, Any]) -> int:
    """How many answers a request is billed for: ``n`` choices (completions: per prompt)."""
    if url == "/v1/chat/completions":
        return _int_field(body, "n", 1)
    if url == "/v1/completions":
        n = max(_int_field(body, "n", 1), _int_field(body, "best_of", 1))
        return n * _prompt_count(body.get("prompt", ""))
    return 1


def _message_tokens(count: _TextCounter, message: Mapping[str, Any]) -> int:
    tokens = TOKENS_PER_MESSAGE
    for key, value in message.items():
        tokens += _value_tokens(count, value)
        if key == "name":
            tokens += TOKENS_PER_NAME
    return tokens


def _value_tokens(count: _TextCounter, value: Any) -> int:
    """Tokens of the text inside a message value: strings, content parts, tool calls."""
    if isinstance(value, str):
        return count(value)
    if isinstance(value, list):
        return sum(_value_tokens(count, v) for v in value)
    if not isinstance(value, Mapping):
        return 0
    kind = value.get("type")
    if kind in _TEXT_PART_TYPES:
        return _value_tokens(count, value.get("text"))
    if kind in _IMAGE_PART_TYPES:
        return _image_tokens(value)
    if kind in _UNCOUNTED_PART_TYPES:
        return 0
    return sum(_value_tokens(count, v) for k, v in value.items() if k != "type")


def _image_tokens(part: Mapping[str, Any]) -> int:
    detail = part.get("detail")
    image_url = part.get("image_url")
    if isinstance(image_url, Mapping):
        detail = image_url.get("detail", detail)
    return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_DEFAULT


def _input_tokens(count: _TextCounter, value: Any) -> int:
    """Embeddings/completions input: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return count(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_input_tokens(count, v) for v in value)
    return 0


def _prompt_count(prompt: Any) -> int:
    if isinstance(prompt, list) and prompt and not all(isinstance(p, int) for p in prompt):
        return len(prompt)
    return 1


def _json_tokens(count: _TextCounter, body: Mapping[str, Any], fields: tuple[str, ...]) -> int:
    """Tool and schema definitions, counted as compact JSON: a slight over-estimate."""
    present = {f: body[f] for f in fields if body.get(f)}
    if not present:
        return 0
    return count(json.dumps(present, separators=(",", ":"), ensure_ascii=False))


def _with_output(
    input_tokens: int, model: str | None, url: str, body: Mapping[str, Any], copies: int = 1
) -> RequestTokens:
    for field in _OUTPUT_LIMIT_FIELDS:
        limit = body.get(field)
        if isinstance(limit, int) and not isinstance(limit, bool):
            if not 1 <= limit <= MAX_TOKEN_LIMIT:
                raise OpenAIBatchInputError(f"body.{field} is {limit}; it must be 1 to {MAX_TOKEN_LIMIT:,}")
            return RequestTokens(input_tokens, limit * copies)
    assumed = default_max_output_tokens(model, url)
    # The completions default (16) is the API's own, not a guess.
    return RequestTokens(input_tokens, assumed * copies, output_limit_assumed=url != "/v1/completions")


def _int_field(body: Mapping[str, Any], field: str, default: int) -> int:
    value = body.get(field)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _base_model(model: str) -> str:
    """``ft:gpt-4o-mini-2024-07-18:org::id`` tokenizes like its base model."""
    if model.startswith("ft:"):
        return model[3:].split(":", 1)[0]
    return model


def _longest_prefix(table: Mapping[str, Any], model: str) -> Any:
    best = max((p for p in table if model.startswith(p)), key=len, default=None)
    return None if best is None else table[best]
