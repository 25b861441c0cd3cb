"""The legacy ``/v1/completions`` body, after ``CompletionCreateParamsNonStreaming``."""

from __future__ import annotations

from typing import Literal

from airflow_provider_openai_batch.core.validate.bodies.base import UNSET, Body, Choices, TokenLimit, UnsetType


class StreamOptions(Body):
    include_obfuscation: bool | UnsetType = UNSET
    include_usage: bool | UnsetType = UNSET


class CompletionBody(Body):
    model: str
    prompt: str | list[str | int | list[int]] | None
    best_of: int | None = None
    echo: bool | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: int | None = None
    max_tokens: TokenLimit | None = None
    n: Choices | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: Literal[False] | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | UnsetType = UNSET
