"""Request lines from records: templated prompts, pass-through body parameters, stable custom ids.

A record is any mapping (a dict from XCom, a CSV row, a SQL row as dict). Templates are Jinja,
rendered in a sandbox with ``StrictUndefined`` so a misspelt field fails on the first record
instead of sending empty prompts to a paid API.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import msgspec
from jinja2.sandbox import SandboxedEnvironment

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import ENDPOINTS, MAX_CUSTOM_ID_LENGTH

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ENCODE = msgspec.json.Encoder().encode

# Which body key carries the templated text for each endpoint.
PROMPT_KEYS = {
    "/v1/responses": "input",
    "/v1/embeddings": "input",
    "/v1/completions": "prompt",
    "/v1/moderations": "input",
}


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
    :param model: the model for every request of the job.
    :param messages: chat messages whose ``content`` is a Jinja template over the record.
    :param prompt: a Jinja template for endpoints with a single text input (responses ``input``,
        embeddings ``input``, completions ``prompt``, moderations ``input``).
    :param body: any other body parameters, passed through unchanged (``max_tokens``,
        ``temperature``, ``response_format``, ``dimensions``, …).
    """

    endpoint: str
    model: str
    messages: Sequence[Message] = ()
    prompt: str | None = None
    body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise OpenAIBatchInputError(
                f"endpoint {self.endpoint!r} is not a Batch API endpoint; use one of {sorted(ENDPOINTS)}"
            )
        if not self.model:
            raise OpenAIBatchInputError("model is required (one model per batch job)")
        if self.endpoint == "/v1/chat/completions" and not self.messages:
            raise OpenAIBatchInputError("chat completions need 'messages': a list of {role, content} templates")
        if self.endpoint in PROMPT_KEYS and self.prompt is None and not self.messages:
            key = PROMPT_KEYS[self.endpoint]
            raise OpenAIBatchInputError(f"{self.endpoint} needs 'prompt': a template for the body's {key!r}")


class RequestBuilder:
    """Renders request lines (bytes, newline-terminated) from records, checking custom ids as it goes."""

    def __init__(self, template: RequestTemplate, key_field: str) -> None:
        if not key_field:
            raise OpenAIBatchInputError("key_field is required: custom_id must come from a stable record key")
        self.template = template
        self.key_field = key_field
        self._messages = [(m.role, _ENV.from_string(m.content)) for m in template.messages]
        self._prompt = _ENV.from_string(template.prompt) if template.prompt is not None else None
        self._seen: set[str] = set()

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
        if custom_id in self._seen:
            raise RecordError(f"record #{position}: duplicate key {self.key_field}={custom_id!r}")
        self._seen.add(custom_id)
        return custom_id

    def body(self, record: Mapping[str, Any], position: int) -> dict[str, Any]:
        context = {**record, "record": record}
        try:
            body: dict[str, Any] = {"model": self.template.model}
            if self._messages:
                body["messages" if self.template.endpoint != "/v1/responses" else "input"] = [
                    {"role": role, "content": tpl.render(context)} for role, tpl in self._messages
                ]
            if self._prompt is not None:
                body[PROMPT_KEYS.get(self.template.endpoint, "input")] = self._prompt.render(context)
        except jinja2.TemplateError as err:
            raise RecordError(f"record #{position} ({self.key_field}={record.get(self.key_field)!r}): {err}") from None
        body.update(self.template.body)
        return body

    def line(self, record: Mapping[str, Any], position: int) -> tuple[str, bytes]:
        custom_id = self.custom_id(record, position)
        request = {
            "custom_id": custom_id,
            "method": "POST",
            "url": self.template.endpoint,
            "body": self.body(record, position),
        }
        return custom_id, _ENCODE(request) + b"\n"

    def lines(self, records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[str, bytes]]:
        for position, record in enumerate(records, start=1):
            if not isinstance(record, Mapping):
                raise RecordError(f"record #{position} is a {type(record).__name__}, not a mapping of fields")
            yield self.line(record, position)


def _fields(record: Any) -> str:
    try:
        return ", ".join(sorted(map(str, record)))[:200]
    except TypeError:
        return type(record).__name__
