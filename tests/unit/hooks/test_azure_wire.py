"""An Azure OpenAI connection end to end against the emulator's Azure-style routes, over real HTTP.

The ``openai`` package's Azure clients call ``{azure_endpoint}/openai/...?api-version=...`` with the
key in an ``api-key`` header; the emulator answers there as Azure does, so the hook, the trigger
(on ``AsyncAzureOpenAI``) and the results operator are exercised with the clients Azure users get.
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.operators.batch_lifecycle import submit_shard
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from tests.conftest import TEST_API_KEY
from tests.unit.operators.fakes import RecordingTI
from tests.unit.operators.test_results import collect, read_rows, run_to_completion, shard_refs

API_VERSION = "2024-10-21"


@pytest.fixture
def azure_conn(emulator, monkeypatch):
    emulator.update_settings(api_key=TEST_API_KEY)
    conn = {
        "conn_type": "openai_batch",
        "password": TEST_API_KEY,
        "extra": {"api_version": API_VERSION, "azure_endpoint": emulator.url},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AZURE_EMULATOR", json.dumps(conn))
    yield "azure_emulator"
    emulator.update_settings(api_key=None)


async def first_event(trigger: OpenAIBatchTrigger) -> dict:
    event = await trigger.run().__anext__()
    return event.payload


def test_an_azure_connection_submits_waits_and_collects_through_the_azure_clients(azure_conn, tmp_path):
    hook = OpenAIBatchHook(conn_id=azure_conn)
    assert isinstance(hook.client, openai.AzureOpenAI)
    assert str(hook.client.base_url).endswith("/openai/")
    assert hook.test_connection()[0]

    items = []
    for ref in shard_refs(tmp_path, [3, 2]):
        batch = submit_shard(hook, ref, {"test": "azure"})
        event = asyncio.run(first_event(OpenAIBatchTrigger(batch.id, azure_conn, poll_interval=0.05)))
        assert event["status"] == "completed"
        items.append({"shard": ref.to_json(), "batch": event["batch"]})

    summary, _ = run_to_completion(collect(items, tmp_path / "results", conn_id=azure_conn), {"ti": RecordingTI()})
    rows = read_rows(tmp_path / "results")
    assert (summary["requests"], summary["succeeded"]) == (5, 5)
    assert {row["status"] for row in rows.values()} == {"succeeded"} and len(rows) == 5
    assert all(row["content"] for row in rows.values())


def test_the_azure_routes_refuse_a_wrong_key_and_a_call_without_api_version(azure_conn, emulator):
    wrong = openai.AzureOpenAI(
        azure_endpoint=emulator.url, api_version=API_VERSION, api_key="sk-wrong-key-000000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.batches.list(limit=1)
    unversioned = openai.OpenAI(base_url=f"{emulator.url}/openai", api_key=TEST_API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        unversioned.batches.list(limit=1)
