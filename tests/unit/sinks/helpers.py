"""Result record batches for the sink tests, made by the real reconciler from emulator-shaped lines."""

from __future__ import annotations

import msgspec

from airflow_provider_openai_batch.core.collect.result_table import reconciled_batches
from airflow_provider_openai_batch.core.collect.results import BatchOutcome, Reconciler


def chat_line(custom_id: str, content: str) -> bytes:
    body = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "created": 1_767_225_600,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }
    response = {"status_code": 200, "request_id": f"req_{custom_id}", "body": body}
    return msgspec.json.encode({"custom_id": custom_id, "response": response, "error": None})


def embedding_line(custom_id: str, vector: list[float]) -> bytes:
    body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"embedding": vector}],
        "usage": {"prompt_tokens": 3},
    }
    return msgspec.json.encode({"custom_id": custom_id, "response": {"status_code": 200, "body": body}})


def batches(job_id: str, ids: list[str], content: str = "positive", *, size: int = 65_536, expect_json: bool = False):
    """Record batches of one succeeded row per id (content may be JSON when ``expect_json``)."""
    reconciler = Reconciler(BatchOutcome(job_id, 0, "batch_1", "completed", expect_json=expect_json, created_at=1), ids)
    return list(reconciled_batches(reconciler, [chat_line(i, content) for i in ids], size=size))
