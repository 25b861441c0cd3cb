"""Checks of API call parameters, with the 400 messages OpenAI gives (no HTTP here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_openai_batch.core.limits import (
    COMPLETION_WINDOW,
    ENDPOINTS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE_LENGTH,
)
from airflow_provider_openai_batch.emulator.answers import SUPPORTED_ENDPOINTS
from airflow_provider_openai_batch.emulator.errors import invalid_value, missing_parameter

# Bounds of ``expires_after.seconds`` for files and batch outputs: one hour to thirty days.
MIN_EXPIRES_SECONDS = 3600
MAX_EXPIRES_SECONDS = 30 * 24 * 3600
MAX_BATCH_PAGE = 100
DEFAULT_BATCH_PAGE = 20


@dataclass(frozen=True)
class BatchParams:
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    output_expires_seconds: int | None


def batch_params(body: dict[str, Any]) -> BatchParams:
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not body.get(name):
            raise missing_parameter(name)
    if not isinstance(body["input_file_id"], str):
        raise invalid_value("input_file_id", "expected a file id string.")
    return BatchParams(
        input_file_id=body["input_file_id"],
        endpoint=_endpoint(body["endpoint"]),
        completion_window=_window(body["completion_window"]),
        metadata=metadata(body.get("metadata")),
        output_expires_seconds=expires_after(body.get("output_expires_after"), "output_expires_after"),
    )


def _endpoint(endpoint: Any) -> str:
    if endpoint not in ENDPOINTS:
        raise invalid_value("endpoint", f"{endpoint!r}. Supported values are: {sorted(ENDPOINTS)}.")
    if endpoint not in SUPPORTED_ENDPOINTS:
        raise invalid_value("endpoint", f"the emulator does not answer {endpoint}; it answers {SUPPORTED_ENDPOINTS}.")
    return str(endpoint)


def _window(window: Any) -> str:
    if window != COMPLETION_WINDOW:
        raise invalid_value("completion_window", f"{window!r}. Supported values are: '{COMPLETION_WINDOW}'.")
    return COMPLETION_WINDOW


def metadata(value: Any) -> dict[str, str] | None:
    """At most 16 string pairs, keys up to 64 characters and values up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise invalid_value("metadata", f"expected an object with at most {MAX_METADATA_PAIRS} pairs.")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise invalid_value("metadata", f"key {key[:20]!r}... is longer than {MAX_METADATA_KEY_LENGTH} characters.")
        if not isinstance(item, str) or len(item) > MAX_METADATA_VALUE_LENGTH:
            raise invalid_value(
                "metadata", f"the value of {key!r} must be a string of at most {MAX_METADATA_VALUE_LENGTH} characters."
            )
    return dict(value)


def expires_after(value: Any, param: str) -> int | None:
    """``{"anchor": "created_at", "seconds": N}`` with N from one hour to thirty days."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise invalid_value(f"{param}.anchor", "the only supported anchor is 'created_at'.")
    return expires_seconds(value.get("seconds"), param)


def expires_seconds(seconds: Any, param: str) -> int:
    try:
        number = int(seconds)
    except (TypeError, ValueError):
        number = -1
    if not MIN_EXPIRES_SECONDS <= number <= MAX_EXPIRES_SECONDS:
        raise invalid_value(f"{param}.seconds", f"must be between {MIN_EXPIRES_SECONDS} and {MAX_EXPIRES_SECONDS}.")
    return number


def page_limit(limit: int, maximum: int) -> int:
    if not 1 <= limit <= maximum:
        raise invalid_value("limit", f"must be between 1 and {maximum}, got {limit}.")
    return limit
