"""The provider's own retry policy against the emulator's injected 429s and 500s, over real HTTP."""

from __future__ import annotations

import logging

import openai
import pytest

from airflow_provider_openai_batch.hooks.call_retries import MAX_RETRY_AFTER_SECONDS, CallRetries
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from tests.conftest import TEST_API_KEY
from tests.unit.operators.test_submit import knobs

_LOG = logging.getLogger("test_call_retries")


@pytest.fixture
def hook(openai_conn) -> OpenAIBatchHook:
    return OpenAIBatchHook(conn_id=openai_conn)


def _list_once(hook: OpenAIBatchHook):
    return lambda: hook.single_shot_client.batches.list(limit=1)


@pytest.mark.parametrize(("asked", "waited"), [(7, 7.0), (600, MAX_RETRY_AFTER_SECONDS)])
def test_a_429_waits_as_long_as_the_server_asks_up_to_a_minute(hook, emulator, asked, waited):
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        emulator.update_settings(http_429_rate=0.0)  # the throttling is over

    with knobs(emulator, http_429_rate=1.0, retry_after_seconds=asked):
        CallRetries(base_delay=0.01).call("Listing", _list_once(hook), _LOG, sleep=sleep)

    assert waits == [waited]


def test_persistent_500s_are_retried_a_bounded_number_of_times_each_logged(hook, emulator, caplog):
    waits: list[float] = []
    policy = CallRetries(attempts=3, base_delay=0.01)
    with (
        knobs(emulator, http_500_rate=1.0, retry_after_seconds=0.02),
        caplog.at_level(logging.WARNING, logger=_LOG.name),
        pytest.raises(openai.InternalServerError),
    ):
        policy.call("Listing", _list_once(hook), _LOG, sleep=waits.append)

    assert waits == [0.02, 0.02]
    assert "Listing: HTTP 500; retry 1 of 2 in 0.0 s" in caplog.text
    assert "Listing: HTTP 500; retry 2 of 2 in 0.0 s" in caplog.text
    assert "Listing failed 3 times in a row (last: HTTP 500); giving up" in caplog.text
    assert TEST_API_KEY not in caplog.text


def test_an_error_that_waiting_will_not_heal_is_not_retried(hook):
    waits: list[float] = []
    with pytest.raises(openai.NotFoundError):
        CallRetries().call(
            "Status read", lambda: hook.single_shot_client.batches.retrieve("batch_nope"), _LOG, waits.append
        )
    assert waits == []
