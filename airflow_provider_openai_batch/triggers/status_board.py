"""One sweep of batch statuses per poll interval for all the triggers on a triggerer's event loop.

A triggerer may hold a thousand waits. A ``GET /batches/{id}`` costs ~2 ms of CPU in the openai
client on a small machine: a thousand of them per round is seconds of the triggerer's loop, and a
thousand calls against the account's rate limits. Listing batches (newest first, 100 a page)
reads a hundred at once. So the triggers waiting with the same client and poll interval share a
board: at each sweep it lists pages until it has seen every batch asked for (or passed the oldest
of them), then reads one by one only those the pages did not reach.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import TYPE_CHECKING

import openai

from airflow_provider_openai_batch.core.polling import PollPolicy

if TYPE_CHECKING:
    from openai.types import Batch

PAGE_SIZE = 100
# Fewer waiting batches than this are read one by one: a page would cost as much and may miss them.
LIST_FROM = 10
# Pages listed per sweep at most, per waiting batch: bounds a sweep through an account busy with
# other batches to 1.1 calls per batch, however the listing falls out.
PAGES_PER_BATCH = 0.1


class StatusBoard:
    """
    Read the status of every batch asked for, once per ``interval``, in as few API calls as it can.

    :param client: the async client (shared, not closed here).
    :param interval: seconds between sweeps.
    """

    def __init__(self, client: openai.AsyncOpenAI, interval: float) -> None:
        self.client = client
        self.interval = interval
        self.policy = PollPolicy(poll_interval=interval)
        self.waiting: dict[str, list[asyncio.Future[Batch]]] = {}
        self.created_at: dict[str, float] = {}
        self.calls = 0  # API calls made, for tests and benchmarks
        self.swept = 0  # batches read by the latest sweep: how crowded this triggerer is
        self._sweeper: asyncio.Task[None] | None = None

    async def next_status(self, batch_id: str, created_at: float) -> Batch:
        """The batch as read at the next sweep; raises that sweep's API error if it failed."""
        future: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(batch_id, []).append(future)
        self.created_at[batch_id] = created_at
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_while_asked(), name="openai-batch-status-board")
        try:
            return await future
        finally:
            self._forget(batch_id, future)

    def _forget(self, batch_id: str, future: asyncio.Future[Batch]) -> None:
        futures = self.waiting.get(batch_id)
        if futures and future in futures:
            futures.remove(future)
            if not futures:
                del self.waiting[batch_id]
                self.created_at.pop(batch_id, None)

    async def _sweep_while_asked(self) -> None:
        """Sweep on a fixed cadence (a sweep's own duration does not stretch the interval)."""
        failures = 0
        due = time.monotonic()
        while self.waiting:
            due += self.policy.sleep_for(0.0, failures)
            await asyncio.sleep(max(due - time.monotonic(), 0.0))
            asked = {batch_id: list(futures) for batch_id, futures in self.waiting.items() if futures}
            if not asked:
                continue
            self.swept = len(asked)
            try:
                found = await self.read(set(asked))
            except Exception as err:  # every waiter gets the error: none may hang on a dead sweep
                failures += 1
                _fail(asked, err)
                continue
            failures = 0
            _resolve(asked, found)

    async def read(self, batch_ids: set[str]) -> dict[str, Batch]:
        """Every batch of ``batch_ids``: from listed pages where they reach, else one by one."""
        found: dict[str, Batch] = {}
        unseen = set(batch_ids)
        if len(batch_ids) >= LIST_FROM:
            oldest = min(self.created_at.get(b, 0.0) for b in batch_ids)
            await self._list(unseen, found, oldest, max_pages=max(1, int(len(batch_ids) * PAGES_PER_BATCH)))
        for batch_id in sorted(unseen):
            self.calls += 1
            found[batch_id] = await self.client.batches.retrieve(batch_id)
        return found

    async def _list(self, unseen: set[str], found: dict[str, Batch], oldest: float, max_pages: int) -> None:
        after: str | openai.Omit = openai.omit
        for _ in range(max_pages):
            self.calls += 1
            page = await self.client.batches.list(limit=PAGE_SIZE, after=after)
            for batch in page.data:
                if batch.id in unseen:
                    found[batch.id] = batch
                    unseen.discard(batch.id)
            if not unseen or not page.data or not page.has_more or page.data[-1].created_at < oldest:
                return
            after = page.data[-1].id


def _resolve(asked: dict[str, list[asyncio.Future[Batch]]], found: dict[str, Batch]) -> None:
    for batch_id, futures in asked.items():
        for future in futures:
            if not future.done():
                future.set_result(found[batch_id])


def _fail(asked: dict[str, list[asyncio.Future[Batch]]], error: Exception) -> None:
    for futures in asked.values():
        for future in futures:
            if not future.done():
                future.set_exception(error)


_BOARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, float], StatusBoard]] = (
    weakref.WeakKeyDictionary()
)


def status_board(client: openai.AsyncOpenAI, interval: float) -> StatusBoard:
    """The board of this event loop for ``client`` and ``interval``, made on first use."""
    boards = _BOARDS.setdefault(asyncio.get_running_loop(), {})
    key = (id(client), float(interval))
    if key not in boards or boards[key].client is not client:
        boards[key] = StatusBoard(client, interval)
    return boards[key]
