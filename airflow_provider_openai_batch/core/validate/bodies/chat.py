"""The ``/v1/chat/completions`` body, after ``CompletionCreateParamsNonStreaming``.

Messages are told apart by ``role``, content parts and tools by ``type``, so a wrong role, a
misspelt key or a string where a number belongs fails at decode time, in C.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from airflow_provider_openai_batch.core.validate.bodies.base import UNSET, Body, Choices, Tagged, TokenLimit, UnsetType
from airflow_provider_openai_batch.core.validate.bodies.formats import (
    Metadata,
    Moderation,
    PromptCacheBreakpoint,
    ReasoningEffort,
    ResponseFormat,
    TextOnlyPart,
    TextPart,
)

# --- content parts ---------------------------------------------------------------------------


class ImageURL(Body):
    url: str
    detail: Literal["auto", "low", "high", "original"] | UnsetType = UNSET


class ImagePart(Tagged, tag="image_url"):
    image_url: ImageURL
    prompt_cache_breakpoint: PromptCacheBreakpoint | UnsetType = UNSET


class InputAudio(Body):
    data: str
    format: Literal["wav", "mp3"]


class InputAudioPart(Tagged, tag="input_audio"):
    input_audio: InputAudio
    prompt_cache_breakpoint: PromptCacheBreakpoint | UnsetType = UNSET


class FileData(Body):
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET
    filename: str | UnsetType = UNSET


class FilePart(Tagged, tag="file"):
    file: FileData
    prompt_cache_breakpoint: PromptCacheBreakpoint | UnsetType = UNSET


class RefusalPart(Tagged, tag="refusal"):
    refusal: str


UserPart = TextPart | ImagePart | InputAudioPart | FilePart
TextContent = str | list[TextOnlyPart]

# --- tool calls made by an earlier assistant turn --------------------------------------------


class FunctionCall(Body):
    arguments: str
    name: str


class FunctionToolCall(Tagged, tag="function"):
    id: str
    function: FunctionCall


class CustomCall(Body):
    input: str
    name: str


class CustomToolCall(Tagged, tag="custom"):
    id: str
    custom: CustomCall


# --- messages --------------------------------------------------------------------------------


class Message(msgspec.Struct, tag_field="role", forbid_unknown_fields=True, gc=False, kw_only=True):
    """One chat message; ``role`` picks the variant."""


class DeveloperMessage(Message, tag="developer"):
    content: TextContent
    name: str | UnsetType = UNSET


class SystemMessage(Message, tag="system"):
    content: TextContent
    name: str | UnsetType = UNSET


class UserMessage(Message, tag="user"):
    content: str | list[UserPart]
    name: str | UnsetType = UNSET


class AssistantAudio(Body):
    id: str


class AssistantMessage(Message, tag="assistant"):
    audio: AssistantAudio | None = None
    content: str | list[TextPart | RefusalPart] | None = None
    function_call: FunctionCall | None = None
    name: str | UnsetType = UNSET
    refusal: str | None = None
    tool_calls: list[FunctionToolCall | CustomToolCall] | UnsetType = UNSET


class ToolMessage(Message, tag="tool"):
    content: TextContent
    tool_call_id: str


class FunctionMessage(Message, tag="function"):
    content: str | None
    name: str


ChatMessage = DeveloperMessage | SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage

# --- tools and tool choice -------------------------------------------------------------------


class FunctionDefinition(Body):
    """``parameters`` stays raw: the schema checker caches by its bytes (see ``schemas``)."""

    name: str
    description: str | UnsetType = UNSET
    parameters: msgspec.Raw | UnsetType = UNSET
    strict: bool | None = None


class FunctionTool(Tagged, tag="function"):
    function: FunctionDefinition


class CustomFormatText(Tagged, tag="text"):
    pass


class Grammar(Body):
    definition: str
    syntax: Literal["lark", "regex"]


class CustomFormatGrammar(Tagged, tag="grammar"):
    grammar: Grammar


class CustomToolDefinition(Body):
    name: str
    description: str | UnsetType = UNSET
    format: CustomFormatText | CustomFormatGrammar | UnsetType = UNSET


class CustomTool(Tagged, tag="custom"):
    custom: CustomToolDefinition


class AllowedTools(Body):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolChoice(Tagged, tag="allowed_tools"):
    allowed_tools: AllowedTools


class ToolName(Body):
    name: str


class NamedToolChoice(Tagged, tag="function"):
    function: ToolName


class NamedCustomToolChoice(Tagged, tag="custom"):
    custom: ToolName


ToolChoice = Literal["none", "auto", "required"] | AllowedToolChoice | NamedToolChoice | NamedCustomToolChoice


class LegacyFunction(Body):
    """An entry of the deprecated ``functions`` list."""

    name: str
    description: str | UnsetType = UNSET
    parameters: msgspec.Raw | UnsetType = UNSET


# --- the smaller options ---------------------------------------------------------------------


class VoiceID(Body):
    id: str


class AudioOutput(Body):
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]
    voice: str | VoiceID


class Prediction(Body):
    content: TextContent
    type: Literal["content"]


class StreamOptions(Body):
    include_obfuscation: bool | UnsetType = UNSET
    include_usage: bool | UnsetType = UNSET


class PromptCacheOptions(Body):
    mode: Literal["implicit", "explicit"] | UnsetType = UNSET
    ttl: Literal["30m"] | UnsetType = UNSET


class ApproximateLocation(Body):
    city: str | UnsetType = UNSET
    country: str | UnsetType = UNSET
    region: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET


class UserLocation(Body):
    approximate: ApproximateLocation
    type: Literal["approximate"]


class WebSearchOptions(Body):
    search_context_size: Literal["low", "medium", "high"] | UnsetType = UNSET
    user_location: UserLocation | None = None


# --- the body --------------------------------------------------------------------------------


class ChatCompletionBody(Body):
    """``model`` is required and any string: the batch needs one model per file, the API knows the names."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    model: str
    audio: AudioOutput | None = None
    frequency_penalty: float | None = None
    function_call: Literal["none", "auto"] | ToolName | UnsetType = UNSET
    functions: list[LegacyFunction] | UnsetType = UNSET
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_completion_tokens: TokenLimit | None = None
    max_tokens: TokenLimit | None = None
    metadata: Metadata | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    moderation: Moderation | None = None
    n: Choices | None = None
    parallel_tool_calls: bool | UnsetType = UNSET
    prediction: Prediction | None = None
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: PromptCacheOptions | UnsetType = UNSET
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning_effort: ReasoningEffort | None = None
    response_format: ResponseFormat | UnsetType = UNSET
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: Literal[False] | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    tool_choice: ToolChoice | UnsetType = UNSET
    tools: list[FunctionTool | CustomTool] | UnsetType = UNSET
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | UnsetType = UNSET
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: WebSearchOptions | UnsetType = UNSET
