"""The batch lifecycle over HTTP: states and timestamps, counts, usage, metadata, order, listing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from openai import OpenAI
from openai.types import Batch

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.unit.emulator.helpers import Batches, chat_line

LINES = [chat_line(f"req-{i}", f"Hello number {i}") for i in range(20)]


def _watch(client: OpenAI, batch_id: str, timeout: float = 5) -> list[Batch]:
    """Poll until the batch finishes; every distinct status seen, in order."""
    seen: list[Batch] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1].status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline
        batch = client.batches.retrieve(batch_id)
        if not seen or seen[-1].status != batch.status:
            seen.append(batch)
        time.sleep(0.01)
    return seen


def test_happy_path_goes_through_every_state_with_timestamps(client: OpenAI, server: EmulatorServer, batches: Batches):
    server.update_settings(validating_seconds=0.15, in_progress_seconds=0.15, finalizing_seconds=0.15)
    created = batches.submit(LINES, metadata={"run": "nightly"})

    seen = _watch(client, created.id)
    final = seen[-1]

    assert created.status == "validating"
    assert [b.status for b in seen] == ["validating", "in_progress", "finalizing", "completed"]
    assert final.created_at <= final.in_progress_at <= final.finalizing_at <= final.completed_at
    assert final.expires_at == final.created_at + 24 * 3600
    assert seen[1].output_file_id is None and seen[2].output_file_id is None  # published when completed
    assert final.output_file_id is not None and final.error_file_id is None
    assert Batch.model_validate(final.model_dump(), strict=True) == final


def test_completed_batch_reports_counts_usage_metadata_and_model(batches: Batches):
    batch = batches.run(LINES, metadata={"team": "data", "run": "42"})

    outputs = batches.lines(batch.output_file_id)
    bodies = [line["response"]["body"] for line in outputs]
    assert batch.request_counts.model_dump() == {"total": 20, "completed": 20, "failed": 0}
    assert batch.metadata == {"team": "data", "run": "42"}
    assert batch.model == "gpt-4o-mini"
    assert batch.usage.input_tokens == sum(b["usage"]["prompt_tokens"] for b in bodies)
    assert batch.usage.output_tokens == sum(b["usage"]["completion_tokens"] for b in bodies)
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    assert batch.usage.input_tokens_details.cached_tokens == 0
    assert batch.usage.output_tokens_details.reasoning_tokens == 0


def test_output_lines_have_the_documented_shape(batches: Batches):
    batch = batches.run(LINES[:1])

    (line,) = batches.lines(batch.output_file_id)

    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["id"].startswith("batch_req_")
    assert line["error"] is None
    assert line["response"]["status_code"] == 200
    assert line["response"]["request_id"].startswith("req_")


def test_output_lines_are_shuffled_but_complete(batches: Batches):
    batch = batches.run(LINES)

    order = [line["custom_id"] for line in batches.lines(batch.output_file_id)]

    assert sorted(order) == sorted(line["custom_id"] for line in LINES)
    assert order != [line["custom_id"] for line in LINES]


def test_result_files_are_listed_with_purpose_batch_output(client: OpenAI, batches: Batches):
    batch = batches.run(LINES[:2])

    output = client.files.retrieve(batch.output_file_id)

    assert output.purpose == "batch_output"
    assert output.filename == f"{batch.id}_output.jsonl"


def test_deleting_the_input_file_does_not_break_a_running_batch(
    client: OpenAI, server: EmulatorServer, batches: Batches
):
    server.update_settings(validating_seconds=0.1)
    created = batches.submit(LINES[:3])
    client.files.delete(created.input_file_id)

    assert batches.wait(created.id).request_counts.completed == 3


def test_list_paginates_newest_first_with_auto_pagination(client: OpenAI, batches: Batches):
    uploaded = batches.upload(LINES[:1])
    created = [
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        for _ in range(7)
    ]

    first_page = client.batches.list(limit=3)
    everything = [b.id for b in client.batches.list(limit=3)]

    assert [b.id for b in first_page.data] == [b.id for b in reversed(created)][:3]
    assert first_page.has_more is True
    assert everything == [b.id for b in reversed(created)]
    assert client.batches.list(limit=3, after=created[0].id).data == []


def test_unknown_batch_is_a_404(client: OpenAI):
    with pytest.raises(openai.NotFoundError) as raised:
        client.batches.retrieve("batch_nope")

    assert "batch_nope" in raised.value.body["message"]


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"completion_window": "48h"}, "completion_window"),
        ({"endpoint": "/v1/unknown"}, "endpoint"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, "output_expires_after.seconds"),
    ],
)
def test_bad_create_parameters_are_400s_naming_the_parameter(client: OpenAI, batches: Batches, options, param):
    uploaded = batches.upload(LINES[:1])
    arguments = {"input_file_id": uploaded.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}

    with pytest.raises(openai.BadRequestError) as raised:
        client.batches.create(**{**arguments, **options})

    assert raised.value.body["param"] == param


def test_create_with_unknown_input_file_is_a_404(client: OpenAI):
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


def test_output_expires_after_sets_the_result_files_expiry(client: OpenAI, batches: Batches):
    batch = batches.run(LINES[:1], output_expires_after={"anchor": "created_at", "seconds": 3600})

    output = client.files.retrieve(batch.output_file_id)

    assert output.expires_at == output.created_at + 3600


def test_concurrent_reads_process_a_batch_once(client: OpenAI, batches: Batches):
    created = batches.submit(LINES)

    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda _: client.batches.retrieve(created.id), range(16)))

    assert {b.status for b in seen} == {"completed"}
    assert len({b.output_file_id for b in seen}) == 1
    assert [f.purpose for f in client.files.list()].count("batch_output") == 1
