from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
import tiktoken

from airflow_provider_openai_batch.core import tokens
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.tokens import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    IMAGE_TOKENS_DEFAULT,
    IMAGE_TOKENS_LOW,
    UNKNOWN_MODEL_MAX_OUTPUT,
    RequestTokens,
    count_request_tokens,
    count_text_tokens,
    default_max_output_tokens,
    encoding_for_model,
    encoding_name_for_model,
)

CHAT = "/v1/chat/completions"


def _clear_caches() -> None:
    for cached in (tokens.get_encoding, tokens.encoding_for_model, tokens._text_counter, tokens._encoding_name):
        cached.cache_clear()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:
    """Every connection attempt fails, and tiktoken's own download cache is an empty folder."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _clear_caches()
    yield
    _clear_caches()


def test_tiktoken_alone_cannot_load_without_network(no_network: None) -> None:
    # Shows the block is real: tiktoken's own loader would have to download.
    with pytest.raises(Exception):  # noqa: B017, PT011 - requests/urllib3 error types vary
        tiktoken.get_encoding("cl100k_base")


@pytest.mark.parametrize(
    ("model", "name", "ids"),
    [
        ("gpt-4o-mini", "o200k_base", [24912, 2375]),
        ("gpt-4", "cl100k_base", [15339, 1917]),
    ],
)
def test_encodings_load_offline_from_package_data(no_network: None, model: str, name: str, ids: list[int]) -> None:
    encoding = encoding_for_model(model)

    assert encoding.name == name
    assert encoding.encode_ordinary("hello world") == ids
    assert encoding.decode(ids) == "hello world"


def test_known_token_counts() -> None:
    assert count_text_tokens("hello world", "gpt-4o") == 2
    assert count_text_tokens("tiktoken is great!", "gpt-4o") == 6
    assert encoding_for_model("gpt-4o").encode("tiktoken is great!") == [83, 8251, 2488, 382, 2212, 0]
    assert encoding_for_model("gpt-3.5-turbo").encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    # Special-token text in user content is ordinary text, not a control token.
    assert count_text_tokens("<|endoftext|>", "gpt-4o") > 1


def test_packaged_file_must_match_tiktokens_pinned_hash() -> None:
    with pytest.raises(RuntimeError, match="SHA-256"):
        tokens._read_packaged_ranks("o200k_base", "0" * 64)


def test_only_packaged_encodings_are_offered() -> None:
    with pytest.raises(ValueError, match="p50k_base"):
        tokens.get_encoding("p50k_base")


def test_loading_leaves_tiktoken_module_untouched() -> None:
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext import openai_public

    encoding_for_model("gpt-4o")
    assert openai_public.load_tiktoken_bpe is load_tiktoken_bpe


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
    ],
)
def test_model_to_encoding(model: str, expected: str) -> None:
    assert encoding_name_for_model(model) == expected


def test_unknown_model_uses_o200k_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        assert encoding_name_for_model("some-future-model") == "o200k_base"
    assert "some-future-model" in caplog.text


def test_chat_follows_cookbook_rule() -> None:
    body = {
        "model": "gpt-4o-mini",
        "max_completion_tokens": 50,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "name": "bob", "content": "Hello!"},
        ],
    }
    c = lambda s: count_text_tokens(s, "gpt-4o-mini")  # noqa: E731
    system = 3 + c("system") + c("You are a helpful assistant.")
    user = 3 + c("user") + c("bob") + 1 + c("Hello!")

    assert count_request_tokens(CHAT, body) == RequestTokens(system + user + 3, 50)
    assert system + user + 3 == 21


def test_chat_text_parts_count_like_strings_and_images_get_an_allowance() -> None:
    as_string = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Describe this picture."}]}
    as_parts = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this picture."},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
                ],
            }
        ],
    }
    plain = count_request_tokens(CHAT, as_string).input_tokens

    assert count_request_tokens(CHAT, as_parts).input_tokens == plain + IMAGE_TOKENS_LOW + IMAGE_TOKENS_DEFAULT


def test_chat_n_multiplies_the_output_ceiling() -> None:
    body = {"model": "gpt-4o", "n": 3, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}

    assert count_request_tokens(CHAT, body).max_output_tokens == 300


def test_tools_add_input_tokens() -> None:
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "weather in Paris?"}]}
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}

    with_tools = count_request_tokens(CHAT, {**base, "tools": [tool]}).input_tokens

    assert with_tools > count_request_tokens(CHAT, base).input_tokens


def test_responses_input_string_messages_and_instructions() -> None:
    c = lambda s: count_text_tokens(s, "gpt-4.1")  # noqa: E731
    as_string = count_request_tokens("/v1/responses", {"model": "gpt-4.1", "input": "Say hi", "max_output_tokens": 64})
    as_messages = count_request_tokens(
        "/v1/responses",
        {
            "model": "gpt-4.1",
            "instructions": "Be brief.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hi"}]}],
        },
    )

    assert as_string == RequestTokens(3 + c("user") + c("Say hi") + 3, 64)
    assert as_messages.input_tokens == as_string.input_tokens + 3 + c("system") + c("Be brief.")
    assert as_messages.max_output_tokens == default_max_output_tokens("gpt-4.1")
    assert as_messages.output_limit_assumed


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world", "tiktoken is great!"], 2 + 2 + 6),
        ([15339, 1917, 0], 3),
        ([[15339, 1917], [0]], 3),
    ],
)
def test_embeddings_input_shapes(value: object, expected: int) -> None:
    body = {"model": "text-embedding-3-small", "input": value}

    assert count_request_tokens("/v1/embeddings", body) == RequestTokens(expected, 0)


def test_completions_prompt_list_gets_n_completions_each() -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["hello world", "hello world"], "n": 2, "max_tokens": 10}

    assert count_request_tokens("/v1/completions", body) == RequestTokens(4, 40)


def test_completions_default_is_the_apis_16_tokens() -> None:
    counted = count_request_tokens("/v1/completions", {"model": "davinci-002", "prompt": "hello world"})

    assert counted == RequestTokens(2, COMPLETIONS_DEFAULT_MAX_TOKENS, output_limit_assumed=False)


def test_moderations_count_text_only() -> None:
    body = {
        "model": "omni-moderation-latest",
        "input": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}},
        ],
    }

    assert count_request_tokens("/v1/moderations", body) == RequestTokens(2, 0)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", 16_384),
        ("gpt-4o-2024-05-13", 4_096),
        ("gpt-4.1-mini", 32_768),
        ("gpt-5-nano", 128_000),
        ("o3", 100_000),
        ("gpt-4-turbo", 4_096),
        ("gpt-3.5-turbo", 4_096),
        ("mystery-model", UNKNOWN_MODEL_MAX_OUTPUT),
    ],
)
def test_default_output_ceiling_is_the_models_maximum(model: str, expected: int) -> None:
    counted = count_request_tokens(CHAT, {"model": model, "messages": [{"role": "user", "content": "hi"}]})

    assert counted.max_output_tokens == expected
    assert counted.output_limit_assumed


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens", "max_output_tokens"])
def test_explicit_output_limit_wins(field: str) -> None:
    body = {"model": "gpt-4o", field: 7, "messages": [{"role": "user", "content": "hi"}]}

    assert count_request_tokens(CHAT, body) == RequestTokens(count_request_tokens(CHAT, body).input_tokens, 7)


def test_unsupported_endpoint_is_an_input_error() -> None:
    with pytest.raises(OpenAIBatchInputError, match=r"/v1/images/generations.*cost limit"):
        count_request_tokens("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a cat"})
