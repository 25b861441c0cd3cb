"""The "OpenAI batch" extra link: OpenAI's dashboard page for a batch on OpenAI's API, nothing elsewhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_openai_batch.links import batch as link_module
from airflow_provider_openai_batch.links.batch import BATCH_LINK_XCOM, OpenAIBatchLink
from airflow_provider_openai_batch.operators.submit import OpenAIBatchSubmitOperator
from tests.unit.operators.fakes import RecordingTI


def pushed_link(monkeypatch, host: str) -> Any:
    """What the submit operator pushes for the link when its connection points at ``host``."""
    conn = {"conn_type": "openai_batch", "host": host, "password": "sk-test"}
    monkeypatch.setenv("AIRFLOW_CONN_LINK_TEST", json.dumps(conn))
    op = OpenAIBatchSubmitOperator(task_id="submit", shard={}, conn_id="link_test")
    ti = RecordingTI()
    op.remember_batch({"ti": ti}, "batch_abc")  # no API call: the client's base URL decides
    assert ti.pushed["batch_id"] == "batch_abc"
    return ti.pushed[BATCH_LINK_XCOM]


def test_a_batch_on_openais_api_links_to_its_dashboard_page(monkeypatch):
    assert pushed_link(monkeypatch, "https://api.openai.com/v1") == "https://platform.openai.com/batches/batch_abc"


@pytest.mark.parametrize("host", ["http://127.0.0.1:8000/v1", "https://my-proxy.example.com/v1"])
def test_a_batch_elsewhere_gets_no_dashboard_link(monkeypatch, host):
    assert pushed_link(monkeypatch, host) == ""


@pytest.mark.parametrize(
    ("xcoms", "expected"),
    [
        (
            {BATCH_LINK_XCOM: "https://platform.openai.com/batches/b1", "batch_id": "b1"},
            "https://platform.openai.com/batches/b1",
        ),
        ({BATCH_LINK_XCOM: "", "batch_id": "b1"}, ""),
        ({"batch_id": "b1"}, "https://platform.openai.com/batches/b1"),  # a task from before the link was pushed
        ({}, ""),
    ],
)
def test_the_link_shows_what_the_task_pushed(monkeypatch, xcoms, expected):
    monkeypatch.setattr(link_module.XCom, "get_value", lambda ti_key, key: xcoms.get(key))
    assert OpenAIBatchLink().get_link(None, ti_key=None) == expected  # type: ignore[arg-type]
