"""The status board against the emulator: how many API calls a sweep makes, and what waiters get."""

from __future__ import annotations

import asyncio
from collections import Counter

import openai
import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.status_board import StatusBoard
from tests.conftest import TEST_API_KEY
from tests.unit.operators.test_submit import knobs, make_shard, request


@pytest.fixture
def batch_ids(openai_conn, tmp_path, emulator):
    """Batches that stay in progress; ``batch_ids(n)`` makes n of them over one uploaded file."""
    hook = OpenAIBatchHook()
    file_id = hook.upload_file(make_shard(tmp_path, [request("a")]).path).id
    with knobs(emulator, in_progress_seconds=600):
        yield lambda n: [hook.create_batch(input_file_id=file_id, endpoint="/v1/chat/completions").id for _ in range(n)]


def counting_client(emulator, calls: Counter, retries: int = 2) -> openai.AsyncOpenAI:
    async def count(request) -> None:
        calls["list" if request.url.path.endswith("/batches") else "retrieve"] += 1

    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [count]})
    return openai.AsyncOpenAI(base_url=emulator.base_url, api_key=TEST_API_KEY, http_client=http, max_retries=retries)


async def sweep(board: StatusBoard, ids: list[str], created: dict[str, float] | None = None) -> list:
    created = created or created_times(ids)
    return await asyncio.gather(*(board.next_status(i, created[i]) for i in ids), return_exceptions=True)


def created_times(ids: list[str]) -> dict[str, float]:
    return {i: OpenAIBatchHook().get_batch(i).created_at for i in ids}


async def test_one_page_serves_many_waiting_batches(emulator, batch_ids):
    ids, calls = batch_ids(30), Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client, interval=0.01), ids)
    assert [b.id for b in batches] == ids
    assert {b.status for b in batches} == {"in_progress"}
    assert calls == {"list": 1}


async def test_a_few_batches_are_read_one_by_one(emulator, batch_ids):
    ids, calls = batch_ids(3), Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client, interval=0.01), ids)
    assert [b.id for b in batches] == ids
    assert calls == {"retrieve": 3}


async def test_batches_the_pages_do_not_reach_are_read_one_by_one(emulator, batch_ids):
    watched = batch_ids(12)
    batch_ids(110)  # newer batches fill the first page
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client, interval=0.01), watched)
    assert [b.id for b in batches] == watched
    # One page at most (0.1 page per batch): never much more than one call per batch.
    assert calls == {"list": 1, "retrieve": 12}


async def test_an_api_error_reaches_every_waiter(emulator, batch_ids):
    ids = batch_ids(12)
    created = created_times(ids)
    async with counting_client(emulator, Counter(), retries=0) as client:
        with knobs(emulator, http_500_rate=1.0):
            outcomes = await sweep(StatusBoard(client, interval=0.01), ids, created)
    assert all(isinstance(o, openai.InternalServerError) for o in outcomes), outcomes


async def test_a_cancelled_wait_is_forgotten_and_the_sweeps_stop(emulator, batch_ids):
    (batch_id,) = batch_ids(1)
    async with counting_client(emulator, Counter()) as client:
        board = StatusBoard(client, interval=30)
        waiter = asyncio.create_task(board.next_status(batch_id, 0.0))
        await asyncio.sleep(0.05)
        assert batch_id in board.waiting
        waiter.cancel()
        await asyncio.sleep(0)
        assert board.waiting == {}
