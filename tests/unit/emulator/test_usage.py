"""The emulator reports prompt tokens as the build's estimate counts them (core.tokens)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_openai_batch.core.tokens import count_request_tokens
from tests.unit.emulator.helpers import CHAT, Batches, request_line

SYSTEM = "Classify the customer's feedback. Answer positive, negative or neutral."
CHAT_BODIES = [
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "The earbuds arrived early and work perfectly. Très contente !"},
        ],
        "max_tokens": 3,
    },
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "developer", "content": SYSTEM, "name": "policy"},
            {"role": "user", "content": [{"type": "text", "text": "Battery died after two days."}]},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "label", "schema": {"type": "object", "properties": {"label": {"type": "string"}}}},
        },
    },
]
RESPONSES_BODIES = [
    {"model": "gpt-4.1-mini", "input": "Summarise: the parcel came a week late.", "instructions": SYSTEM},
    {
        "model": "gpt-4.1-mini",
        "input": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "input_text", "text": "Support never answered my mail."}]},
        ],
        "max_output_tokens": 16,
    },
]
EMBEDDINGS_BODIES = [
    {"model": "text-embedding-3-small", "input": "How do I reset my password?"},
    {"model": "text-embedding-3-small", "input": ["Refund policy", "Shipping times to Canada", "日本への配送"]},
    {"model": "text-embedding-3-small", "input": [15339, 1917, 0, 42]},
]


def _usage_prompt_tokens(url: str, body: dict[str, Any]) -> int:
    usage = body["usage"]
    return usage["input_tokens"] if url == "/v1/responses" else usage["prompt_tokens"]


@pytest.mark.parametrize(
    ("url", "bodies"),
    [(CHAT, CHAT_BODIES), ("/v1/responses", RESPONSES_BODIES), ("/v1/embeddings", EMBEDDINGS_BODIES)],
    ids=["chat", "responses", "embeddings"],
)
def test_reported_prompt_tokens_equal_the_estimates_count(batches: Batches, url: str, bodies: list[dict[str, Any]]):
    lines = [request_line(f"r{i}", url, body) for i, body in enumerate(bodies)]

    batch = batches.run(lines, endpoint=url)
    results = batches.results(batch)

    expected = {f"r{i}": count_request_tokens(url, body).input_tokens for i, body in enumerate(bodies)}
    reported = {cid: _usage_prompt_tokens(url, line["response"]["body"]) for cid, line in results.items()}
    assert reported == expected
    assert batch.usage is not None and batch.usage.input_tokens == sum(expected.values())


def test_a_body_too_malformed_to_count_is_answered_400_and_the_rest_still_counted(batches: Batches):
    good = CHAT_BODIES[0]
    lines = [
        request_line("good", CHAT, good),
        request_line("bad", CHAT, {"model": "gpt-4o-mini", "messages": ["not a message"]}),
    ]

    batch = batches.run(lines)
    results = batches.results(batch)

    assert results["bad"]["response"]["status_code"] == 400
    assert batch.usage is not None and batch.usage.input_tokens == count_request_tokens(CHAT, good).input_tokens
