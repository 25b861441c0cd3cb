"""The status board against the emulator: how many API calls a sweep makes, and what waiters get."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import openai
import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.triggers.status_board import COALESCE, StatusBoard
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
    wanted = set(ids)
    return {b.id: b.created_at for b in OpenAIBatchHook().list_batches() if b.id in wanted}


async def test_one_page_serves_many_waiting_batches(emulator, batch_ids):
    ids, calls = batch_ids(30), Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client), ids)
    assert [b.id for b in batches] == ids
    assert {b.status for b in batches} == {"in_progress"}
    assert calls == {"list": 1}


async def test_a_few_batches_are_read_one_by_one(emulator, batch_ids):
    ids, calls = batch_ids(3), Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client), ids)
    assert [b.id for b in batches] == ids
    assert calls == {"retrieve": 3}


async def test_batches_the_pages_do_not_reach_are_read_one_by_one(emulator, batch_ids):
    watched = batch_ids(12)
    batch_ids(110)  # newer batches fill the first page
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        batches = await sweep(StatusBoard(client), watched)
    assert [b.id for b in batches] == watched
    # One page at most (0.1 page per batch): never much more than one call per batch.
    assert calls == {"list": 1, "retrieve": 12}


async def test_an_api_error_reaches_every_waiter(emulator, batch_ids):
    ids = batch_ids(12)
    created = created_times(ids)
    async with counting_client(emulator, Counter(), retries=0) as client:
        with knobs(emulator, http_500_rate=1.0):
            outcomes = await sweep(StatusBoard(client), ids, created)
    assert all(isinstance(o, openai.InternalServerError) for o in outcomes), outcomes


async def test_a_cancelled_wait_is_forgotten_and_the_sweeps_stop(emulator, batch_ids):
    (batch_id,) = batch_ids(1)
    async with counting_client(emulator, Counter()) as client:
        board = StatusBoard(client)
        waiter = asyncio.create_task(board.next_status(batch_id, 0.0, due=time.time() + 30))
        await asyncio.sleep(0.05)
        assert batch_id in board.waiting
        waiter.cancel()
        await asyncio.sleep(0)
        assert board.waiting == {}
        assert board.due == {}
        await asyncio.sleep(0.05)
        assert board._sweeper is not None and board._sweeper.done()
        assert board.calls == 0


async def waits(board: StatusBoard, due_in: dict[str, float]) -> dict[str, asyncio.Task]:
    """A wait for each batch, due the given seconds from now."""
    created = created_times(list(due_in))
    now = time.time()
    tasks = {i: asyncio.create_task(board.next_status(i, created[i], now + s)) for i, s in due_in.items()}
    await asyncio.sleep(0)
    return tasks


async def test_a_sweep_waits_for_a_due_batch_and_updates_every_waiting_batch_its_page_shows(emulator, batch_ids):
    first, *others = batch_ids(12)
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        board = StatusBoard(client)
        tasks = await waits(board, {first: 0.3, **dict.fromkeys(others, 60)})
        await asyncio.sleep(0.1)
        assert calls == {}  # nothing due yet
        await asyncio.wait_for(tasks[first], 10)
        await asyncio.sleep(0)
    assert all(task.done() and task.result().id == batch_id for batch_id, task in tasks.items())
    assert calls == {"list": 1}
    assert board.sweeps == 1


async def test_with_few_waiting_only_the_due_batch_is_read(emulator, batch_ids):
    first, *others = batch_ids(3)
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        board = StatusBoard(client)
        tasks = await waits(board, {first: 0, **dict.fromkeys(others, 60)})
        await asyncio.wait_for(tasks[first], 10)
        pending = [task for batch_id, task in tasks.items() if batch_id != first and not task.done()]
        for task in pending:
            task.cancel()
    assert calls == {"retrieve": 1}
    assert len(pending) == 2


async def test_batches_due_within_a_moment_of_each_other_share_one_sweep(emulator, batch_ids):
    ids = batch_ids(12)
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        board = StatusBoard(client)
        tasks = await waits(board, {batch_id: 0.2 + i * COALESCE / 24 for i, batch_id in enumerate(ids)})
        await asyncio.wait_for(asyncio.gather(*tasks.values()), 10)
    assert calls == {"list": 1}
    assert board.sweeps == 1


async def test_many_triggers_on_their_own_schedules_cost_one_call_per_sweep(openai_conn, batch_ids):
    from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
    from airflow_provider_openai_batch.triggers.status_board import status_board

    batches = [OpenAIBatchHook().get_batch(batch_id) for batch_id in batch_ids(30)]
    runs = [OpenAIBatchTrigger(b.id, poll_interval=0.3, created_at=b.created_at).run() for b in batches]
    waits = [asyncio.create_task(run.__anext__()) for run in runs]
    await asyncio.sleep(1.5)
    board = status_board(await OpenAIBatchHook().get_shared_async_client())
    calls, sweeps, waiting = board.calls, board.sweeps, len(board.waiting)
    for task in waits:
        task.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    assert waiting == 30
    assert sweeps >= 2
    assert calls == sweeps  # one page per sweep serves all thirty


async def test_waits_asked_again_a_little_apart_are_read_by_one_sweep(emulator, batch_ids):
    # 150 batches (two pages): the newest due in 5 s, the others 1.2 s later — as a thousand waits
    # asked again over the time it takes to hand out a sweep's results. A sweep reads those due
    # within a fifth of their wait along with the first, so it lists both pages, and no trail of
    # sweeps follows it.
    *older, newest = batch_ids(150)
    calls = Counter()
    async with counting_client(emulator, calls) as client:
        board = StatusBoard(client)
        tasks = await waits(board, {newest: 5.0, **dict.fromkeys(older, 6.2)})
        await asyncio.wait_for(asyncio.gather(*tasks.values()), 20)
    assert board.sweeps == 1
    assert calls == {"list": 2}
