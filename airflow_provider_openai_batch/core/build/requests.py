"""Request lines from records: templated prompts, pass-through body parameters, stable custom ids.

A record is any mapping (a dict from XCom, a CSV/Parquet/SQL row). Every string of ``messages``
and ``prompt`` is a Jinja template over the record (see ``core.build.templating``); everything else in
the body is the same on every line.

Speed: the request is encoded to JSON once, with a placeholder where each per-record string goes,
and split there into constant byte fragments. A record's line is then its custom_id and rendered
strings, each JSON-encoded, joined between the fragments: the same bytes as encoding the whole
request (a test checks it), without building or walking a dict per record. Records go through in
chunks, and a chunk's ids, renderings, encodings and joins run under ``map`` in C; a chunk with
anything wrong (a missing key, a duplicate, a template Jinja must render) is redone record by
record so the error names the record.

Memory: ids are checked for repeats within a window of the last ~65k (``core.validate.seen_ids``,
as 64-bit hashes, without spilling), so memory does not grow with the job; a repeat of an id
further back is caught by the validation of the written shards, which checks the whole job
before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn, get_args

import jinja2
import msgspec

from airflow_provider_openai_batch.core.build.templating import TextTemplate, compile_tree
from airflow_provider_openai_batch.core.cache.keys import key_prefix
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import ENDPOINTS, MAX_CUSTOM_ID_LENGTH, MAX_LINE_BYTES
from airflow_provider_openai_batch.core.tokens import (
    RequestTokens,
    TextTokenCounter,
    TokenEstimate,
    count_request_tokens,
    count_text_tokens,
)
from airflow_provider_openai_batch.core.validate.seen_ids import WINDOW, SeenIds
from airflow_provider_openai_batch.core.validate.structured import response_format_params

_ENCODE: Final = msgspec.json.Encoder().encode
_ENCODE_SORTED: Final = msgspec.json.Encoder(order="sorted").encode
_DIGEST: Final = operator.methodcaller("digest")
CHUNK_RECORDS: Final = 256  # measured: big enough to amortise the C passes, small enough to redo cheaply
# Stands for a per-record string while the request is encoded once; never valid in a real prompt.
_SLOT: Final = "\x00openai-batch-slot-{}\x00"

CHAT: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"
# Which body key carries the templated text for each endpoint.
PROMPT_KEYS: Final = {
    RESPONSES: "input",
    "/v1/embeddings": "input",
    "/v1/completions": "prompt",
    "/v1/moderations": "input",
    "/v1/images/generations": "prompt",
}
# Endpoints whose ``input`` counts against the per-batch embedding-input limit.
EMBEDDINGS: Final = "/v1/embeddings"


class RecordError(OpenAIBatchInputError):
    """A record cannot become a request; the message names the record."""


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class RequestTemplate:
    """
    How every record becomes one request body.

    :param endpoint: the batch endpoint, e.g. ``/v1/chat/completions``.
    :param model: the model for every request of the job (so every shard has one model).
    :param messages: chat messages (or Responses ``input`` items); every string in them, such as
        ``content`` or a content part's ``text``, is a Jinja template over the record.
    :param prompt: the templated input of single-input endpoints: Responses ``input``,
        embeddings ``input``, completions ``prompt``, moderations ``input``, image ``prompt``. A
        string, or a list (several embedding inputs, or content parts).
    :param body: any other body parameters, passed through unchanged (``max_tokens``,
        ``temperature``, ``dimensions``, ...).
    :param response_format: Structured Outputs: a pydantic model class or a JSON Schema dict, made
        strict-valid (``core.validate.structured``); chat gets ``response_format``, Responses ``text.format``.
    """

    endpoint: str
    model: str
    messages: Sequence[Mapping[str, Any] | Message] = ()
    prompt: Any = None
    body: Mapping[str, Any] = field(default_factory=dict)
    response_format: Any = None

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise OpenAIBatchInputError(
                f"endpoint {self.endpoint!r} is not a Batch API endpoint; use one of {sorted(ENDPOINTS)}"
            )
        if not self.model or not isinstance(self.model, str):
            raise OpenAIBatchInputError("model is required (one model per batch job)")
        if self.endpoint == CHAT and not self.messages:
            raise OpenAIBatchInputError("chat completions need 'messages': a list of {role, content} templates")
        if self.endpoint == CHAT and self.prompt is not None:
            raise OpenAIBatchInputError("chat completions take 'messages', not 'prompt'")
        if self.endpoint in PROMPT_KEYS and self.prompt is None and not self.messages:
            key = PROMPT_KEYS[self.endpoint]
            raise OpenAIBatchInputError(f"{self.endpoint} needs 'prompt': a template for the body's {key!r}")
        if self.messages and self.prompt is not None:
            raise OpenAIBatchInputError("give either 'messages' or 'prompt', not both: they fill the same body key")
        if self.messages and self.endpoint not in (CHAT, RESPONSES):
            raise OpenAIBatchInputError(f"{self.endpoint} takes 'prompt', not 'messages'")
        taken = sorted(set(self.body) & set(self.templated_keys()))
        if taken:
            raise OpenAIBatchInputError(
                f"body sets {', '.join(map(repr, taken))}, which the template fills; "
                "pass model=, messages=/prompt= or response_format= instead"
            )

    def prompt_key(self) -> str | None:
        if self.messages:
            return "messages" if self.endpoint == CHAT else "input"
        return PROMPT_KEYS.get(self.endpoint) if self.prompt is not None else None

    def templated_keys(self) -> tuple[str, ...]:
        keys = ["model"]
        if (key := self.prompt_key()) is not None:
            keys.append(key)
        if self.response_format is not None:
            keys.extend(response_format_params(self.endpoint, self.response_format))
        return tuple(keys)

    def body_tree(self) -> dict[str, Any]:
        """The body with the templated parts still as template strings."""
        tree: dict[str, Any] = {"model": self.model}
        key = self.prompt_key()
        if self.messages:
            tree[key] = [_message_dict(m) for m in self.messages]  # type: ignore[index]
        elif key is not None:
            tree[key] = self.prompt
        tree.update(self.body)
        if self.response_format is not None:
            tree.update(response_format_params(self.endpoint, self.response_format))
        return tree

    def inputs_per_request(self) -> int:
        """Embedding inputs each request carries (the per-batch limit counts inputs, not requests)."""
        if self.endpoint != EMBEDDINGS:
            return 0
        return len(self.prompt) if isinstance(self.prompt, list | tuple) else 1


def _message_dict(message: Mapping[str, Any] | Message) -> dict[str, Any]:
    if isinstance(message, Message):
        return {"role": message.role, "content": message.content}
    if not isinstance(message, Mapping) or "role" not in message:
        raise OpenAIBatchInputError(f"each message needs a 'role' (and usually 'content'), got {message!r}")
    return dict(message)


@dataclass(frozen=True)
class Chunk:
    """Consecutive requests: their custom ids, lines (newline-terminated) and input-token estimates."""

    ids: list[str]
    lines: list[bytes]
    tokens: list[int] | None = None
    keys: list[bytes] | None = None
    columns: list[list[bytes]] | None = None  # with ``join=False``: the encoded custom_ids and strings


class _Layout:
    """The request encoded once, split into constant fragments around its per-record strings."""

    def __init__(self, template: RequestTemplate) -> None:
        self.templates: list[TextTemplate] = []
        body = template.body_tree()
        key = template.prompt_key()
        if key is not None:  # every string under the prompt key is a template
            body[key] = compile_tree(body[key], key, self._place)
        request = {"custom_id": _SLOT.format(0), "method": "POST", "url": template.endpoint, "body": body}
        self.body = body
        try:
            blob = _ENCODE(request)
        except (TypeError, msgspec.EncodeError) as err:
            raise OpenAIBatchInputError(f"body parameters are not JSON: {err}") from None
        self.fragments = _split(blob, len(self.templates) + 1)
        self._key_layout: tuple[list[bytes], list[int]] | None = None
        self._url = template.endpoint

    def keys(self, values: Sequence[list[bytes]]) -> list[bytes]:
        """Each request's answer-cache key (``core.cache.keys``) from its encoded strings, without decoding.

        The body with sorted keys is encoded once with its slots, so a record's canonical body is
        its strings joined between fragments, as the line is; ``line_keys`` over the written line
        gives the same key (a test checks it).
        """
        if self._key_layout is None:
            blob = key_prefix(self._url) + _ENCODE_SORTED(self.body)
            found = sorted((blob.find(_ENCODE(_SLOT.format(i))), i - 1) for i in range(1, len(self.templates) + 1))
            fragments, start = [], 0
            for at, index in found:
                fragments.append(blob[start:at])
                start = at + len(_ENCODE(_SLOT.format(index + 1)))
            fragments.append(blob[start:])
            self._key_layout = (fragments, [index for _, index in found])
        fragments, order = self._key_layout
        count = len(values[0]) if values else 1
        pieces: list[Iterable[bytes]] = [itertools.repeat(fragments[0], count)]
        for index, fragment in zip(order, fragments[1:], strict=True):
            pieces += (values[index], itertools.repeat(fragment))
        bodies = map(b"".join, zip(*pieces, strict=False))
        return list(map(_DIGEST, map(hashlib.sha256, bodies)))

    def _place(self, template: TextTemplate) -> str:
        if template.constant is not None:
            return template.constant
        self.templates.append(template)
        return _SLOT.format(len(self.templates))

    def join(self, encoded: Sequence[bytes]) -> bytes:
        """One line from the encoded custom_id and strings, in slot order."""
        parts = [self.fragments[0]]
        for value, fragment in zip(encoded, self.fragments[1:], strict=True):
            parts += (value, fragment)
        return b"".join(parts)

    def join_many(self, columns: Sequence[list[bytes]]) -> list[bytes]:
        """Lines for a chunk: one column of encoded strings per slot."""
        pieces: list[Iterable[bytes]] = [itertools.repeat(self.fragments[0])]
        for column, fragment in zip(columns, self.fragments[1:], strict=True):
            pieces += (column, itertools.repeat(fragment))
        return list(map(b"".join, zip(*pieces, strict=False)))  # the repeats are endless

    def body_with(self, values: Sequence[str]) -> Any:
        """The body with these strings in its slots (for token counting probes)."""
        slots = {_SLOT.format(index): value for index, value in enumerate(values, start=1)}
        return _substitute(self.body, slots)


def _split(blob: bytes, slots: int) -> list[bytes]:
    fragments: list[bytes] = []
    start = 0
    for index in range(slots):
        marker = _ENCODE(_SLOT.format(index))
        at = blob.find(marker, start)
        if at < 0 or blob.find(marker, at + 1) >= 0:
            raise OpenAIBatchInputError("a template contains the reserved placeholder text; remove it")
        fragments.append(blob[start:at])
        start = at + len(marker)
    fragments.append(blob[start:] + b"\n")
    return fragments


def _substitute(value: Any, slots: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return slots.get(value, value)
    if isinstance(value, dict):
        return {key: _substitute(item, slots) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, slots) for item in value]
    return value


class _TokenPlan:
    """Input tokens of a request as a constant plus the tokens of its counted per-record strings.

    Token counting is additive over the strings of a body (``core.tokens``), so the constant
    part (system prompt, instructions, schemas, per-message overhead) is counted once, by
    counting the body with every slot empty. Each slot is then probed: if filling it adds exactly
    the probe's own tokens it is counted per record; if it adds none (an image URL) it is
    skipped; anything else makes every request counted whole (exact, slower).
    """

    _PROBE = "hello world"

    def __init__(self, layout: _Layout, template: RequestTemplate, mode: TokenEstimate) -> None:
        self.layout, self.url = layout, template.endpoint
        slots = len(layout.templates)
        base = count_request_tokens(self.url, layout.body_with([""] * slots))
        self.base = base.input_tokens
        self.output = base
        probe = count_text_tokens(self._PROBE, template.model)
        self.counted: list[int] = []
        self.whole = False
        for index in range(slots):
            values = [""] * slots
            values[index] = self._PROBE
            added = count_request_tokens(self.url, layout.body_with(values)).input_tokens - self.base
            if added == probe:
                self.counted.append(index)
            elif added != 0:
                self.whole = True
        self.counter = TextTokenCounter(template.model, mode)

    def chunk(self, start: int, columns: Sequence[list[str]]) -> list[int]:
        if self.whole:
            return [
                count_request_tokens(self.url, self.layout.body_with(values)).input_tokens
                for values in zip(*columns, strict=True)
            ]
        counts = [self.counter.count_many(columns[index], start) for index in self.counted]
        if not counts:
            return [self.base] * len(columns[0]) if columns else []
        totals = counts[0] if len(counts) == 1 else list(map(sum, zip(*counts, strict=True)))
        return list(map(self.base.__add__, totals))


class RequestBuilder:
    """Renders request lines (bytes, newline-terminated) from records, checking custom ids as it goes.

    :param template: how each record becomes a request.
    :param key_field: the record field whose value is the ``custom_id``.
    :param token_estimate: ``"exact"`` or ``"sample"`` to estimate each request's input tokens
        (``core.tokens.TextTokenCounter``), None to skip. Endpoints without a token counter
        (images, videos) get none, and ``token_note`` says why.
    :param id_window: recent ids held to refuse a repeated key as it is read (the written shards
        are validated again as a whole, so a repeat further back is still found before upload).
    :param answer_keys: give each chunk its requests' answer-cache keys.
    """

    def __init__(
        self,
        template: RequestTemplate,
        key_field: str,
        *,
        token_estimate: TokenEstimate | None = None,
        id_window: int = WINDOW,
        answer_keys: bool = False,
    ):
        if not key_field:
            raise OpenAIBatchInputError("key_field is required: custom_id must come from a stable record key")
        self.template = template
        self.key_field = key_field
        self._key = operator.itemgetter(key_field)
        self._layout = _Layout(template)
        self._templates = self._layout.templates
        self._seen = SeenIds(id_window, spill=False)
        self._tokens: _TokenPlan | None = None
        self.answer_keys = answer_keys
        self.token_note = ""
        if token_estimate is not None:
            if token_estimate not in get_args(TokenEstimate):
                raise OpenAIBatchInputError(
                    f"token_estimate must be one of {get_args(TokenEstimate)} or None, got {token_estimate!r}"
                )
            try:
                self._tokens = _TokenPlan(self._layout, template, token_estimate)
            except OpenAIBatchInputError as err:  # an endpoint tokens cannot be estimated for
                self.token_note = str(err)

    @property
    def output_tokens(self) -> RequestTokens | None:
        """Each request's output ceiling (``max_output_tokens``) when tokens are estimated."""
        return self._tokens.output if self._tokens else None

    @property
    def token_counter(self) -> TextTokenCounter | None:
        return self._tokens.counter if self._tokens else None

    def forget_ids(self) -> None:
        """Drop the duplicate-tracking hashes once the job is built."""
        self._seen.close()

    # --- one record at a time (also the path that names a bad record) -------------------------

    def custom_id(self, record: Mapping[str, Any], position: int) -> str:
        try:
            key = record[self.key_field]
        except (KeyError, TypeError):
            raise RecordError(
                f"record #{position} has no key field {self.key_field!r} (fields: {_fields(record)})"
            ) from None
        if key is None or key == "":
            raise RecordError(f"record #{position} has an empty key field {self.key_field!r}")
        custom_id = str(key)
        if len(custom_id) > MAX_CUSTOM_ID_LENGTH:
            raise RecordError(
                f"record #{position}: key {custom_id[:40]!r}… is {len(custom_id)} characters; "
                f"custom_id allows at most {MAX_CUSTOM_ID_LENGTH}"
            )
        if not self._seen.add(custom_id, position):
            raise RecordError(f"record #{position}: duplicate key {self.key_field}={custom_id!r}")
        return custom_id

    def render(self, record: Mapping[str, Any], position: int) -> list[str]:
        """The record's strings, one per template slot."""
        try:
            return [template.render(record) for template in self._templates]
        except jinja2.TemplateError as err:
            raise RecordError(f"record #{position} ({self.key_field}={record.get(self.key_field)!r}): {err}") from None
        except Exception as err:  # a template's own expression failed (``{{ 1 / n }}`` with n = 0)
            raise RecordError(
                f"record #{position} ({self.key_field}={record.get(self.key_field)!r}): {type(err).__name__}: {err}"
            ) from None

    def line(self, record: Mapping[str, Any], position: int) -> tuple[str, bytes]:
        if not isinstance(record, Mapping):
            raise RecordError(f"record #{position} is a {type(record).__name__}, not a mapping of fields")
        custom_id = self.custom_id(record, position)
        values = self.render(record, position)
        return custom_id, self._layout.join([_ENCODE(custom_id), *map(_ENCODE, values)])

    def lines(self, records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, bytes]]:
        for chunk in self.chunks(records):
            yield from zip(chunk.ids, chunk.lines, strict=True)

    # --- chunks --------------------------------------------------------------------------

    def join(self, columns: Sequence[list[bytes]]) -> list[bytes]:
        """The lines of a chunk's ``columns`` (as :meth:`chunks` gives them with ``join=False``)."""
        return self._layout.join_many(columns)

    def chunks(self, records: Iterable[Mapping[str, Any]], *, join: bool = True) -> Iterator[Chunk]:
        """Requests for ``records`` in order, a chunk at a time, with token estimates if asked.

        With ``join=False`` a chunk has no lines but their ``columns``, which are smaller (no
        constant text) for a caller that keeps them before deciding which to write.
        """
        iterator = iter(records)
        start = 0
        while batch := list(itertools.islice(iterator, CHUNK_RECORDS)):
            done = self._fast_chunk(batch)
            ids, values = done if done is not None else self._slow_chunk(batch, start)
            try:
                columns = [list(map(_ENCODE, ids)), *(list(map(_ENCODE, column)) for column in values)]
            except UnicodeEncodeError:
                self._raise_unencodable(start, ids, values)
            self._check_sizes(start, ids, columns)
            tokens = self._tokens.chunk(start, values) if self._tokens else None
            keys = self._layout.keys(columns[1:]) if self.answer_keys else None
            if join:
                yield Chunk(ids, self._layout.join_many(columns), tokens, keys)
            else:
                yield Chunk(ids, [], tokens, keys, columns)
            start += len(batch)

    def _fast_chunk(self, batch: list[Any]) -> tuple[list[str], list[list[str]]] | None:
        """Ids and strings for a clean chunk, checked with C-level passes; None (no effect) if not clean."""
        try:
            keys = list(map(self._key, batch))
        except (KeyError, TypeError, IndexError):
            return None
        ids = list(map(str, keys))
        if None in keys or "" in ids or max(map(len, ids)) > MAX_CUSTOM_ID_LENGTH:
            return None
        fresh = self._seen.fresh(ids)
        if fresh is None:
            return None
        try:
            values = [template.render_many(batch) for template in self._templates]
        except Exception:  # redone record by record, where the error names the record
            return None
        self._seen.record(ids, 0, fresh)
        return ids, values

    def _check_sizes(self, start: int, ids: list[str], columns: list[list[bytes]]) -> None:
        """Refuse a request over ``MAX_LINE_BYTES`` before its text is tokenized or written."""
        if sum(max(map(len, column), default=0) for column in columns) <= MAX_LINE_BYTES:
            return  # the longest value of every column together fit: so does every request
        sizes = [sum(row) for row in zip(*(map(len, column) for column in columns), strict=True)]
        if sizes and max(sizes) > MAX_LINE_BYTES:
            offset = next(i for i, size in enumerate(sizes) if size > MAX_LINE_BYTES)
            raise RecordError(
                f"record #{start + offset + 1} ({self.key_field}={ids[offset]!r}): its request would be "
                f"{sizes[offset]:,} bytes, over the cap of {MAX_LINE_BYTES:,} on one request (about a "
                "million tokens of text); shorten the text or pass large images by URL"
            )

    def _raise_unencodable(self, start: int, ids: list[str], values: list[list[str]]) -> NoReturn:
        """Name the record whose text JSON cannot carry (a lone surrogate, from a bad decode upstream)."""
        for offset, custom_id in enumerate(ids):
            for where, text in [
                ("the key", custom_id),
                *((t.where, v[offset]) for t, v in zip(self._templates, values, strict=True)),
            ]:
                try:
                    _ENCODE(text)
                except UnicodeEncodeError as err:
                    raise RecordError(
                        f"record #{start + offset + 1} ({self.key_field}={custom_id!r}): {where} renders text that "
                        f"is not valid Unicode ({err.reason} at character {err.start}); fix the source's encoding"
                    ) from None
        raise AssertionError("unreachable: a value failed to encode")

    def _slow_chunk(self, batch: list[Any], start: int) -> tuple[list[str], list[list[str]]]:
        ids: list[str] = []
        rows: list[list[str]] = []
        for position, record in enumerate(batch, start + 1):
            if not isinstance(record, Mapping):
                raise RecordError(f"record #{position} is a {type(record).__name__}, not a mapping of fields")
            ids.append(self.custom_id(record, position))
            rows.append(self.render(record, position))
        columns = [list(column) for column in zip(*rows, strict=True)] if self._templates else []
        return ids, columns


def _fields(record: Any) -> str:
    try:
        return ", ".join(sorted(map(str, record)))[:200]
    except TypeError:
        return type(record).__name__
