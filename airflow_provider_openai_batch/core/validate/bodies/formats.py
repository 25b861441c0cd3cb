"""Shapes shared by several endpoints: text content parts and ``response_format``.

Mirrors ``openai.types.shared_params`` and ``chat_completion_content_part_text_param``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from airflow_provider_openai_batch.core.validate.bodies.base import UNSET, Body, Tagged, UnsetType


class PromptCacheBreakpoint(Body):
    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | UnsetType = UNSET


class TextPart(Tagged, tag="text"):
    """A text content part inside a union of parts (``type`` picks the variant)."""

    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | UnsetType = UNSET


class TextOnlyPart(Body):
    """The same text part where it is the only variant.

    A lone tagged struct accepts a missing ``type``; the API requires it, so here it is a field.
    """

    text: str
    type: Literal["text"]
    prompt_cache_breakpoint: PromptCacheBreakpoint | UnsetType = UNSET


class JSONSchema(Body):
    """``response_format.json_schema``; ``schema`` stays raw so identical schemas are checked once."""

    name: str
    description: str | UnsetType = UNSET
    schema: msgspec.Raw | UnsetType = UNSET
    strict: bool | None = None


class ResponseFormatText(Tagged, tag="text"):
    pass


class ResponseFormatJSONObject(Tagged, tag="json_object"):
    pass


class ResponseFormatJSONSchema(Tagged, tag="json_schema"):
    json_schema: JSONSchema


ResponseFormat = ResponseFormatText | ResponseFormatJSONSchema | ResponseFormatJSONObject

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
Metadata = dict[str, str]


# The moderation settings chat and responses bodies share.
class PolicyMode(Body):
    mode: Literal["score", "block"]


class ModerationPolicy(Body):
    input: PolicyMode | None = None
    output: PolicyMode | None = None


class Moderation(Body):
    model: str
    policy: ModerationPolicy | None = None
