"""The body structs must follow the ``openai`` package's request TypedDicts.

When ``openai`` is upgraded and a parameter is added, dropped, made required or given new enum
values, these tests fail and name the struct to update (``core/bodies``).
"""

from __future__ import annotations

import importlib
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

import msgspec
import openai
import pytest
from packaging.version import Version

from airflow_provider_openai_batch.core.limits import ENDPOINTS
from airflow_provider_openai_batch.core.validate.bodies import (
    FOLLOWS_OPENAI,
    chat,
    completions,
    embeddings,
    formats,
    media,
    moderations,
)
from airflow_provider_openai_batch.core.validate.bodies import responses as resp
from airflow_provider_openai_batch.core.validate.bodies.endpoints import RULES_BY_URL

pytestmark = pytest.mark.skipif(
    Version(openai.__version__) < Version(FOLLOWS_OPENAI),
    reason=f"the body structs follow openai {FOLLOWS_OPENAI}'s parameters; openai {openai.__version__} "
    "lacks the newer ones (README: compatibility)",
)

_CHAT = "openai.types.chat"
_CREATE = f"{_CHAT}.completion_create_params"
_RESP = "openai.types.responses"
_RCREATE = f"{_RESP}.response_create_params"

# (struct, "module:TypedDict") pairs, top-level bodies first, then the nested shapes.
PAIRS: list[tuple[type[msgspec.Struct], str]] = [
    (chat.ChatCompletionBody, f"{_CREATE}:CompletionCreateParamsNonStreaming"),
    (resp.ResponsesBody, f"{_RCREATE}:ResponseCreateParamsNonStreaming"),
    (embeddings.EmbeddingBody, "openai.types.embedding_create_params:EmbeddingCreateParams"),
    (completions.CompletionBody, "openai.types.completion_create_params:CompletionCreateParamsNonStreaming"),
    (moderations.ModerationBody, "openai.types.moderation_create_params:ModerationCreateParams"),
    (media.ImageGenerationBody, "openai.types.image_generate_params:ImageGenerateParamsNonStreaming"),
    # chat messages and parts
    (chat.DeveloperMessage, f"{_CHAT}.chat_completion_developer_message_param:ChatCompletionDeveloperMessageParam"),
    (chat.SystemMessage, f"{_CHAT}.chat_completion_system_message_param:ChatCompletionSystemMessageParam"),
    (chat.UserMessage, f"{_CHAT}.chat_completion_user_message_param:ChatCompletionUserMessageParam"),
    (chat.AssistantMessage, f"{_CHAT}.chat_completion_assistant_message_param:ChatCompletionAssistantMessageParam"),
    (chat.AssistantAudio, f"{_CHAT}.chat_completion_assistant_message_param:Audio"),
    (chat.FunctionCall, f"{_CHAT}.chat_completion_assistant_message_param:FunctionCall"),
    (chat.ToolMessage, f"{_CHAT}.chat_completion_tool_message_param:ChatCompletionToolMessageParam"),
    (chat.FunctionMessage, f"{_CHAT}.chat_completion_function_message_param:ChatCompletionFunctionMessageParam"),
    (formats.TextPart, f"{_CHAT}.chat_completion_content_part_text_param:ChatCompletionContentPartTextParam"),
    (formats.TextOnlyPart, f"{_CHAT}.chat_completion_content_part_text_param:ChatCompletionContentPartTextParam"),
    (formats.PromptCacheBreakpoint, f"{_CHAT}.chat_completion_content_part_text_param:PromptCacheBreakpoint"),
    (chat.ImagePart, f"{_CHAT}.chat_completion_content_part_image_param:ChatCompletionContentPartImageParam"),
    (chat.ImageURL, f"{_CHAT}.chat_completion_content_part_image_param:ImageURL"),
    (
        chat.InputAudioPart,
        f"{_CHAT}.chat_completion_content_part_input_audio_param:ChatCompletionContentPartInputAudioParam",
    ),
    (chat.InputAudio, f"{_CHAT}.chat_completion_content_part_input_audio_param:InputAudio"),
    (chat.FilePart, f"{_CHAT}.chat_completion_content_part_param:File"),
    (chat.FileData, f"{_CHAT}.chat_completion_content_part_param:FileFile"),
    (chat.RefusalPart, f"{_CHAT}.chat_completion_content_part_refusal_param:ChatCompletionContentPartRefusalParam"),
    (
        chat.FunctionToolCall,
        f"{_CHAT}.chat_completion_message_function_tool_call_param:ChatCompletionMessageFunctionToolCallParam",
    ),
    (
        chat.CustomToolCall,
        f"{_CHAT}.chat_completion_message_custom_tool_call_param:ChatCompletionMessageCustomToolCallParam",
    ),
    (chat.CustomCall, f"{_CHAT}.chat_completion_message_custom_tool_call_param:Custom"),
    # chat tools and options
    (chat.FunctionTool, f"{_CHAT}.chat_completion_function_tool_param:ChatCompletionFunctionToolParam"),
    (chat.FunctionDefinition, "openai.types.shared_params.function_definition:FunctionDefinition"),
    (chat.CustomTool, f"{_CHAT}.chat_completion_custom_tool_param:ChatCompletionCustomToolParam"),
    (chat.CustomToolDefinition, f"{_CHAT}.chat_completion_custom_tool_param:Custom"),
    (chat.CustomFormatText, f"{_CHAT}.chat_completion_custom_tool_param:CustomFormatText"),
    (chat.CustomFormatGrammar, f"{_CHAT}.chat_completion_custom_tool_param:CustomFormatGrammar"),
    (chat.Grammar, f"{_CHAT}.chat_completion_custom_tool_param:CustomFormatGrammarGrammar"),
    (chat.AllowedToolChoice, f"{_CHAT}.chat_completion_allowed_tool_choice_param:ChatCompletionAllowedToolChoiceParam"),
    (chat.AllowedTools, f"{_CHAT}.chat_completion_allowed_tools_param:ChatCompletionAllowedToolsParam"),
    (chat.NamedToolChoice, f"{_CHAT}.chat_completion_named_tool_choice_param:ChatCompletionNamedToolChoiceParam"),
    (
        chat.NamedCustomToolChoice,
        f"{_CHAT}.chat_completion_named_tool_choice_custom_param:ChatCompletionNamedToolChoiceCustomParam",
    ),
    (chat.ToolName, f"{_CHAT}.chat_completion_named_tool_choice_param:Function"),
    (chat.ToolName, f"{_CHAT}.chat_completion_function_call_option_param:ChatCompletionFunctionCallOptionParam"),
    (chat.LegacyFunction, f"{_CREATE}:Function"),
    (chat.AudioOutput, f"{_CHAT}.chat_completion_audio_param:ChatCompletionAudioParam"),
    (chat.VoiceID, f"{_CHAT}.chat_completion_audio_param:VoiceID"),
    (chat.Prediction, f"{_CHAT}.chat_completion_prediction_content_param:ChatCompletionPredictionContentParam"),
    (chat.StreamOptions, f"{_CHAT}.chat_completion_stream_options_param:ChatCompletionStreamOptionsParam"),
    (formats.Moderation, f"{_CREATE}:Moderation"),
    (formats.ModerationPolicy, f"{_CREATE}:ModerationPolicy"),
    (formats.PolicyMode, f"{_CREATE}:ModerationPolicyInput"),
    (formats.PolicyMode, f"{_CREATE}:ModerationPolicyOutput"),
    (chat.PromptCacheOptions, f"{_CREATE}:PromptCacheOptions"),
    (chat.WebSearchOptions, f"{_CREATE}:WebSearchOptions"),
    (chat.UserLocation, f"{_CREATE}:WebSearchOptionsUserLocation"),
    (chat.ApproximateLocation, f"{_CREATE}:WebSearchOptionsUserLocationApproximate"),
    # response formats
    (formats.JSONSchema, "openai.types.shared_params.response_format_json_schema:JSONSchema"),
    (
        formats.ResponseFormatJSONSchema,
        "openai.types.shared_params.response_format_json_schema:ResponseFormatJSONSchema",
    ),
    (formats.ResponseFormatText, "openai.types.shared_params.response_format_text:ResponseFormatText"),
    (
        formats.ResponseFormatJSONObject,
        "openai.types.shared_params.response_format_json_object:ResponseFormatJSONObject",
    ),
    # responses
    (resp.FunctionTool, f"{_RESP}.function_tool_param:FunctionToolParam"),
    (
        resp.TextFormatJSONSchema,
        f"{_RESP}.response_format_text_json_schema_config_param:ResponseFormatTextJSONSchemaConfigParam",
    ),
    (resp.TextConfig, f"{_RESP}.response_text_config_param:ResponseTextConfigParam"),
    (resp.Reasoning, "openai.types.shared_params.reasoning:Reasoning"),
    (resp.AccessPrograms, f"{_RCREATE}:AccessPrograms"),
    (resp.BackgroundOptions, f"{_RCREATE}:BackgroundOptions"),
    (resp.ContextManagement, f"{_RCREATE}:ContextManagement"),
    (resp.ImageOptions, f"{_RCREATE}:Image"),
    (formats.Moderation, f"{_RCREATE}:Moderation"),
    (formats.ModerationPolicy, f"{_RCREATE}:ModerationPolicy"),
    (formats.PolicyMode, f"{_RCREATE}:ModerationPolicyInput"),
    (resp.PromptCacheOptions, f"{_RCREATE}:PromptCacheOptions"),
    (resp.StreamOptions, f"{_RCREATE}:StreamOptions"),
    (resp.ConversationRef, f"{_RESP}.response_conversation_param_param:ResponseConversationParamParam"),
    (resp.PromptRef, f"{_RESP}.response_prompt_param:ResponsePromptParam"),
    # the rest
    (completions.StreamOptions, f"{_CHAT}.chat_completion_stream_options_param:ChatCompletionStreamOptionsParam"),
    (moderations.ImageURLInput, "openai.types.moderation_image_url_input_param:ModerationImageURLInputParam"),
    (moderations.ImageURL, "openai.types.moderation_image_url_input_param:ImageURL"),
    (moderations.TextInput, "openai.types.moderation_text_input_param:ModerationTextInputParam"),
    (media.Svg, "openai.types.image_generate_params:Svg"),
    (media.SvgReasoning, "openai.types.image_generate_params:SvgReasoning"),
]

# Keys we require although the SDK does not: a batch file needs one model, named on every line.
REQUIRED_HERE = {
    resp.ResponsesBody: {"model"},
    moderations.ModerationBody: {"model"},
    media.ImageGenerationBody: {"model"},
}


def _typed_dict(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _required_keys(typed_dict: Any) -> set[str]:
    """Required keys, read from the hints: openai's modules use postponed annotations, which
    leaves ``__required_keys__`` empty."""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    required = set()
    for key, hint in hints.items():
        origin = get_origin(hint)
        if origin is typing.Required or (typed_dict.__total__ and origin is not typing.NotRequired):
            required.add(key)
    return required


def _struct_keys(struct: type[msgspec.Struct]) -> tuple[set[str], set[str]]:
    """(all keys, required keys) as they appear in JSON, the tag field included."""
    fields = msgspec.structs.fields(struct)
    keys = {field.encode_name for field in fields}
    required = {field.encode_name for field in fields if field.required}
    tag_field = struct.__struct_config__.tag_field
    if tag_field is not None:
        keys.add(tag_field)
        required.add(tag_field)
    return keys, required


def _literals(annotation: Any) -> frozenset[Any] | None:
    """The values of a Literal-only annotation (None / UNSET / list[...] see-through), else None."""
    origin = get_origin(annotation)
    if origin is Literal:
        return frozenset(get_args(annotation))
    if origin is list:
        inner = _literals(get_args(annotation)[0])
        return frozenset(("list", value) for value in inner) if inner else None
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg not in (type(None), msgspec.UnsetType)]
        found = [_literals(member) for member in members]
        if found and all(values is not None for values in found):
            return frozenset().union(*found)  # type: ignore[arg-type]
    return None


def _pair_id(pair: tuple[type, str]) -> str:
    return f"{pair[0].__module__.rsplit('.', 1)[-1]}.{pair[0].__name__}={pair[1].rsplit(':', 1)[-1]}"


@pytest.mark.parametrize(("struct", "ref"), PAIRS, ids=[_pair_id(pair) for pair in PAIRS])
def test_struct_has_the_typed_dicts_keys(struct: type[msgspec.Struct], ref: str) -> None:
    typed_dict = _typed_dict(ref)
    ours, _ = _struct_keys(struct)
    theirs = set(typed_dict.__required_keys__ | typed_dict.__optional_keys__)
    assert ours - theirs == set(), f"{struct.__name__} has keys openai lacks"
    assert theirs - ours == set(), f"{struct.__name__} lacks keys openai has"


@pytest.mark.parametrize(("struct", "ref"), PAIRS, ids=[_pair_id(pair) for pair in PAIRS])
def test_struct_requires_what_the_typed_dict_requires(struct: type[msgspec.Struct], ref: str) -> None:
    typed_dict = _typed_dict(ref)
    _, ours = _struct_keys(struct)
    assert ours - REQUIRED_HERE.get(struct, set()) == _required_keys(typed_dict)


@pytest.mark.parametrize(("struct", "ref"), PAIRS, ids=[_pair_id(pair) for pair in PAIRS])
def test_enum_values_match(struct: type[msgspec.Struct], ref: str) -> None:
    theirs = typing.get_type_hints(_typed_dict(ref))
    ours = {field.encode_name: field.type for field in msgspec.structs.fields(struct)}
    tag_field, tag = struct.__struct_config__.tag_field, struct.__struct_config__.tag
    if tag_field is not None:
        assert tag in (_literals(theirs[tag_field]) or {tag}), f"{struct.__name__}: tag {tag!r} not in openai's"
    for key, annotation in ours.items():
        expected = _literals(theirs[key])
        if expected is not None and _literals(annotation) is not None:
            assert _literals(annotation) == expected, f"{struct.__name__}.{key}: enum values differ from openai's"


def _union_tags(union: Any) -> set[str]:
    tags: set[str] = set()
    for member in get_args(union):
        values = _literals(typing.get_type_hints(member)["type"])
        tags |= set(values or ())
    return tags


def test_responses_tool_variants_cover_openais() -> None:
    tool_param = importlib.import_module(f"{_RESP}.tool_param")
    ours = {member.__struct_config__.tag for member in get_args(resp.Tool)}
    assert ours == _union_tags(tool_param.ToolParam)


def test_every_batch_endpoint_has_a_body() -> None:
    assert set(RULES_BY_URL) == set(ENDPOINTS)
