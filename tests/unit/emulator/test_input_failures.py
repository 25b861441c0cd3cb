"""Input files the service refuses: the batch is created, then ends ``failed`` with ``errors``."""

from __future__ import annotations

import json

from openai.types import Batch

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.unit.emulator.helpers import Batches, chat_line, request_line

VALIDATED = frozenset({"in_progress", "failed"})
GOOD = [chat_line(f"r{i}", f"text {i}") for i in range(3)]


def _only_error(batch: Batch):
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None and batch.errors.object == "list"
    return batch.errors.data[0]


def test_invalid_json_line_reports_its_one_based_line_number(batches: Batches):
    text = json.dumps(GOOD[0]) + "\n" + json.dumps(GOOD[1]) + "\n{not json\n"

    error = _only_error(batches.run(text))

    assert (error.code, error.line) == ("invalid_json_line", 3)


def test_duplicate_custom_id(batches: Batches):
    error = _only_error(batches.run([*GOOD, chat_line("r1", "again")]))

    assert (error.code, error.line, error.param) == ("duplicate_custom_id", 4, "custom_id")


def test_url_mismatch(batches: Batches):
    line = request_line("e", "/v1/embeddings", {"model": "gpt-4o-mini", "input": "x"})

    error = _only_error(batches.run([GOOD[0], line]))

    assert (error.code, error.line) == ("url_mismatch", 2)


def test_model_mismatch(batches: Batches):
    error = _only_error(batches.run([*GOOD, chat_line("other", "x", model="gpt-4o")]))

    assert (error.code, error.line) == ("model_mismatch", 4)


def test_empty_file(batches: Batches):
    error = _only_error(batches.run("\n"))

    assert error.code == "empty_file"


def test_too_many_tasks(server: EmulatorServer, batches: Batches):
    server.update_settings(max_requests_per_file=2)

    error = _only_error(batches.run(GOOD))

    assert error.code == "too_many_tasks"


def test_token_limit_exceeded_by_one_batch(server: EmulatorServer, batches: Batches):
    server.update_settings(enqueued_token_limit=10)

    batch = batches.run(GOOD)
    error = _only_error(batch)

    assert error.code == "token_limit_exceeded"
    assert error.message == (
        "Enqueued token limit reached for gpt-4o-mini in organization org-emulator. Limit: 10 enqueued tokens. "
        "Please try again once some in_progress batches have been completed."
    )
    assert batch.model == "gpt-4o-mini"


def test_token_limit_counts_other_in_progress_batches_of_the_same_model(server: EmulatorServer, batches: Batches):
    text = "word " * 200  # ~250 tokens a request
    lines = [chat_line(f"r{i}", text) for i in range(4)]
    server.update_settings(enqueued_token_limit=1_500, in_progress_seconds=60)
    first = batches.wait(batches.submit(lines).id, until=VALIDATED)

    second = batches.wait(batches.submit(lines).id, until=VALIDATED)
    other_model = batches.wait(batches.submit([chat_line("x", text, model="gpt-4o")]).id, until=VALIDATED)

    assert first.status == "in_progress"
    assert _only_error(second).code == "token_limit_exceeded"
    assert other_model.status == "in_progress"
