"""Shared helpers of the emulator tests: request-line builders and a batch driver."""

from __future__ import annotations

import json
import time
from typing import Any

from openai import OpenAI
from openai.types import Batch, FileObject

from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.emulator import EmulatorSettings

# Instant state changes and tiny retry waits keep the whole module well under its time budget.
FAST = EmulatorSettings(
    validating_seconds=0,
    in_progress_seconds=0,
    finalizing_seconds=0,
    cancelling_seconds=0,
    retry_after_seconds=0.01,
)
CHAT = "/v1/chat/completions"


def chat_line(custom_id: str, text: str, *, model: str = "gpt-4o-mini", system: str | None = None, **body: Any):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": messages, **body},
    }


def request_line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


class Batches:
    """Upload, submit, wait and read results through the openai client, as a user would."""

    def __init__(self, client: OpenAI) -> None:
        self.client = client

    def upload(self, lines: list[dict[str, Any]] | str, name: str = "input.jsonl") -> FileObject:
        text = lines if isinstance(lines, str) else "".join(json.dumps(line) + "\n" for line in lines)
        return self.client.files.create(file=(name, text.encode()), purpose="batch")

    def submit(self, lines: list[dict[str, Any]] | str, endpoint: str = CHAT, **options: Any) -> Batch:
        uploaded = self.upload(lines)
        return self.client.batches.create(
            input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h", **options
        )

    def wait(self, batch_id: str, until: frozenset[str] = TERMINAL_STATUSES, timeout: float = 10) -> Batch:
        deadline = time.monotonic() + timeout
        while (batch := self.client.batches.retrieve(batch_id)).status not in until:
            assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
            time.sleep(0.01)
        return batch

    def run(self, lines: list[dict[str, Any]] | str, endpoint: str = CHAT, **options: Any) -> Batch:
        return self.wait(self.submit(lines, endpoint, **options).id)

    def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        return [json.loads(line) for line in self.client.files.content(file_id).text.splitlines()]

    def results(self, batch: Batch) -> dict[str, dict[str, Any]]:
        """Every result line of a finished batch, output and error file alike, by custom_id."""
        both = self.lines(batch.output_file_id) + self.lines(batch.error_file_id)
        return {line["custom_id"]: line for line in both}
