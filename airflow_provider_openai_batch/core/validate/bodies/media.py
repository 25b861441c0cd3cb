"""Bodies for ``/v1/images/generations`` (typed), ``/v1/images/edits`` and ``/v1/videos`` (loose).

Image edits and videos take files: the SDK types those keys as multipart uploads
(``FileTypes``), which have no JSON form to check against, and the JSON shape the batch accepts
for them is not in the SDK. Their bodies are therefore checked for ``model`` and ``prompt`` only;
other keys pass and the API judges them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from airflow_provider_openai_batch.core.validate.bodies.base import Body, Choices


class SvgReasoning(Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class Svg(Body):
    model: str
    reasoning: SvgReasoning | None = None


class ImageGenerationBody(Body):
    """After ``ImageGenerateParamsNonStreaming``; ``model`` required for one model per file."""

    prompt: str
    model: str
    background: Literal["transparent", "opaque", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    moderation: Literal["low", "auto"] | None = None
    n: Choices | None = None
    output_compression: int | None = None
    output_format: Literal["png", "webp", "jpeg", "gif", "svg"] | None = None
    partial_images: int | None = None
    quality: Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    safety_identifier: str | None = None
    size: str | None = None
    stream: Literal[False] | None = None
    style: Literal["vivid", "natural"] | None = None
    svg: Svg | None = None
    user: str | msgspec.UnsetType = msgspec.UNSET


class LooseMediaBody(msgspec.Struct, gc=False, kw_only=True):
    """Image edits and videos: unknown keys allowed (see the module docstring)."""

    prompt: str
    model: str
    stream: Literal[False] | None = None
