"""Endpoints, per-file limits and batch statuses of the OpenAI Batch API, in one place.

Values come from the public API contract; every check in the package reads them from here so a
limit change is a one-line edit.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Endpoint = Literal[
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
]
ENDPOINTS: Final[frozenset[str]] = frozenset(get_args(Endpoint))

MAX_REQUESTS_PER_FILE: Final = 50_000
MAX_BYTES_PER_FILE: Final = 200_000_000  # OpenAI says "200 MB"; the decimal reading is the safe one
MAX_EMBEDDING_INPUTS_PER_BATCH: Final = 50_000
MAX_EMBEDDING_INPUTS_PER_REQUEST: Final = 2_048
MAX_CUSTOM_ID_LENGTH: Final = 512
# The longest input line (or record) read: 4 MiB is about a million tokens of text, more than any
# model's context. A longer line is refused before it is decoded or tokenized, so a hostile file
# cannot make a task hold gigabytes; pass large images by URL rather than inline.
MAX_LINE_BYTES: Final = 4 * 1024 * 1024
COMPLETION_WINDOW: Final = "24h"

MAX_METADATA_PAIRS: Final = 16
MAX_METADATA_KEY_LENGTH: Final = 64
MAX_METADATA_VALUE_LENGTH: Final = 512

BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
TERMINAL_STATUSES: Final[frozenset[str]] = frozenset({"failed", "completed", "expired", "cancelled"})
ACTIVE_STATUSES: Final[frozenset[str]] = frozenset(get_args(BatchStatus)) - TERMINAL_STATUSES

# Per-request error codes the service writes on the top-level ``error`` of an error-file line.
BATCH_EXPIRED: Final = "batch_expired"
BATCH_CANCELLED: Final = "batch_cancelled"

# Batch-level error codes (``batch.errors.data[].code``) for a file the service refused.
TOKEN_LIMIT_EXCEEDED: Final = "token_limit_exceeded"
INVALID_JSON_LINE: Final = "invalid_json_line"
DUPLICATE_CUSTOM_ID: Final = "duplicate_custom_id"
URL_MISMATCH: Final = "url_mismatch"
MODEL_MISMATCH: Final = "model_mismatch"
EMPTY_FILE: Final = "empty_file"
TOO_MANY_TASKS: Final = "too_many_tasks"

# A cap on output tokens: at least 1, and no more than any model's context (a typo such as 10**40
# would otherwise pass and price the job in sextillions of dollars).
MAX_TOKEN_LIMIT: Final = 10_000_000
