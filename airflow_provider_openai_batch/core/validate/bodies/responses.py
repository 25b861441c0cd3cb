"""The ``/v1/responses`` body, after ``ResponseCreateParamsNonStreaming``.

Every top-level key and the options that shape the output (``text.format``, ``reasoning``,
function tools) are typed. Two places are checked only for shape, on purpose:

* ``input`` items are a 30-odd-way union whose message variant has no required ``type``, so it
  cannot be a tagged union; each item must be an object, the API checks the rest.
* tools other than ``function`` are accepted by their ``type`` with their keys unchecked, as is
  an object ``tool_choice``; they change often and a batch of them is rare.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from airflow_provider_openai_batch.core.validate.bodies.base import UNSET, Body, Loose, Tagged, TokenLimit, UnsetType
from airflow_provider_openai_batch.core.validate.bodies.formats import (
    Metadata,
    Moderation,
    ReasoningEffort,
    ResponseFormatJSONObject,
    ResponseFormatText,
)

Caller = Literal["direct", "programmatic"]


class FunctionTool(Tagged, tag="function"):
    """``parameters`` stays raw: the schema checker caches by its bytes (see ``schemas``)."""

    name: str
    parameters: msgspec.Raw
    strict: bool | None
    allowed_callers: list[Caller] | None = None
    async_: bool | UnsetType = msgspec.field(default=UNSET, name="async")
    defer_loading: bool | UnsetType = UNSET
    description: str | None = None
    output_schema: dict[str, Any] | None = None


class FileSearchTool(Loose, tag="file_search"):
    pass


class ComputerTool(Loose, tag="computer"):
    pass


class ComputerUsePreviewTool(Loose, tag="computer_use_preview"):
    pass


class WebSearchTool(Loose, tag="web_search"):
    pass


class WebSearchTool20250826(Loose, tag="web_search_2025_08_26"):
    pass


class McpTool(Loose, tag="mcp"):
    pass


class CodeInterpreterTool(Loose, tag="code_interpreter"):
    pass


class ProgrammaticToolCallingTool(Loose, tag="programmatic_tool_calling"):
    pass


class ImageGenerationTool(Loose, tag="image_generation"):
    pass


class LocalShellTool(Loose, tag="local_shell"):
    pass


class ShellTool(Loose, tag="shell"):
    pass


class CustomTool(Loose, tag="custom"):
    pass


class NamespaceTool(Loose, tag="namespace"):
    pass


class ToolSearchTool(Loose, tag="tool_search"):
    pass


class WebSearchPreviewTool(Loose, tag="web_search_preview"):
    pass


class WebSearchPreviewTool20250311(Loose, tag="web_search_preview_2025_03_11"):
    pass


class ApplyPatchTool(Loose, tag="apply_patch"):
    pass


Tool = (
    FunctionTool
    | FileSearchTool
    | ComputerTool
    | ComputerUsePreviewTool
    | WebSearchTool
    | WebSearchTool20250826
    | McpTool
    | CodeInterpreterTool
    | ProgrammaticToolCallingTool
    | ImageGenerationTool
    | LocalShellTool
    | ShellTool
    | CustomTool
    | NamespaceTool
    | ToolSearchTool
    | WebSearchPreviewTool
    | WebSearchPreviewTool20250311
    | ApplyPatchTool
)


class TextFormatJSONSchema(Tagged, tag="json_schema"):
    """The Responses flavour of json_schema: flat, and ``schema`` is required."""

    name: str
    schema: msgspec.Raw
    description: str | UnsetType = UNSET
    strict: bool | None = None


class TextConfig(Body):
    format: ResponseFormatText | TextFormatJSONSchema | ResponseFormatJSONObject | UnsetType = UNSET
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(Body):
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    effort: ReasoningEffort | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    mode: str | UnsetType = UNSET
    summary: Literal["auto", "concise", "detailed"] | None = None


class AccessPrograms(Body):
    cyber: Literal["standard", "daybreak_blue", "daybreak_red"] | UnsetType = UNSET


class BackgroundOptions(Body):
    completion_window: Literal["soonest", "2h", "8h"] | UnsetType = UNSET
    continuation_id: str | UnsetType = UNSET


class ContextManagement(Body):
    type: str
    compact_threshold: int | None = None


class ConversationRef(Body):
    id: str


class ImageOptions(Body):
    context_compression: Literal["auto", "enabled", "disabled"] | UnsetType = UNSET


class PromptRef(Body):
    id: str
    variables: dict[str, Any] | None = None
    version: str | None = None


class PromptCacheOptions(Body):
    comparison_response_id: str | None = None
    mode: Literal["implicit", "explicit"] | UnsetType = UNSET
    prewarm: bool | UnsetType = UNSET
    ttl: Literal["30m", "12h"] | UnsetType = UNSET


class StreamOptions(Body):
    include_obfuscation: bool | UnsetType = UNSET


Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class ResponsesBody(Body):
    """``model`` is required here (optional in the SDK): the batch needs one model per file."""

    model: str
    access_programs: AccessPrograms | UnsetType = UNSET
    background: bool | None = None
    background_options: BackgroundOptions | UnsetType = UNSET
    context_management: list[ContextManagement] | None = None
    conversation: str | ConversationRef | None = None
    image: ImageOptions | UnsetType = UNSET
    include: list[Includable] | None = None
    input: str | list[dict[str, Any]] | UnsetType = UNSET
    instructions: str | None = None
    max_output_tokens: TokenLimit | None = None
    max_tool_calls: int | None = None
    metadata: Metadata | None = None
    moderation: Moderation | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: PromptRef | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: PromptCacheOptions | UnsetType = UNSET
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    reasoning: Reasoning | None = None
    safety_identifier: str | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"] | None = None
    store: bool | None = None
    stream: Literal[False] | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    text: TextConfig | UnsetType = UNSET
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | UnsetType = UNSET
