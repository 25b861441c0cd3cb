"""Coalesced batch status reads for all the triggers on a triggerer's event loop.

A triggerer may hold a thousand waits. A ``GET /batches/{id}`` costs ~2 ms of CPU in the openai
client on a small machine: a thousand of them per round is seconds of the triggerer's loop, and a
thousand calls against the account's rate limits. Listing batches (newest first, 100 a page)
reads a hundred at once. So the triggers waiting with the same client share a board. Each asks
for its batch as of a due time (its own read schedule); the board sweeps when the first is due,
takes along those due soon (within a fifth of their wait), lists pages until it has seen every
due batch (or passed the oldest of them) when that is cheaper than reading them one by one, and
hands every waiting batch the pages showed its fresh status — due or not. So the batches of a
triggerer fall into step: a thousand waits asked again over the second or two it takes to hand
out a sweep's results are read together by the next sweep, not by a trail of small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from typing import TYPE_CHECKING

import openai

if TYPE_CHECKING:
    from openai.types import Batch

PAGE_SIZE = 100
# Fewer waiting batches than this are read one by one: a page would cost as much and may miss them.
LIST_FROM = 10
# Pages listed per sweep at most, per due batch: bounds a sweep through an account busy with
# other batches to 1.1 calls per due batch, however the listing falls out.
PAGES_PER_BATCH = 0.1
# A sweep also reads the batches due within this share of their wait (at least COALESCE seconds):
# one sweep instead of a trail of them, for reads at most a fifth of a wait early.
COALESCE = 1.0
COALESCE_SHARE = 0.2


class StatusBoard:
    """
    Read each batch asked for at its due time, in as few API calls as it can.

    :param client: the async client (shared, not closed here).
    """

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.waiting: dict[str, list[asyncio.Future[Batch]]] = {}
        self.created_at: dict[str, float] = {}
        self.due: dict[str, float] = {}
        self.soon: dict[str, float] = {}  # from when a sweep may read each batch along with the due ones
        self.calls = 0  # API calls made, for tests and benchmarks
        self.sweeps = 0  # sweeps made, for tests and benchmarks
        self.swept = 0  # batches waiting at the latest sweep: how crowded this triggerer is
        self._asked = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    async def next_status(self, batch_id: str, created_at: float, due: float | None = None) -> Batch:
        """
        The batch as read by a sweep at or after ``due`` (epoch seconds; ``None``: now), or by an
        earlier sweep whose pages showed it; raises the API error of the sweep that read it for
        this wait, if it failed.
        """
        future: asyncio.Future[Batch] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(batch_id, []).append(future)
        self.created_at[batch_id] = created_at
        now = time.time()
        due = now if due is None else due
        if due < self.due.get(batch_id, due + 1):
            self.due[batch_id] = due
            self.soon[batch_id] = due - max(COALESCE, COALESCE_SHARE * (due - now))
        self._asked.set()
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
                self.due.pop(batch_id, None)
                self.soon.pop(batch_id, None)
                self._asked.set()  # the sweeper looks again: it may have nothing left to wait for

    async def _sweep_while_asked(self) -> None:
        """Sleep until the first due time (a new, earlier one wakes it), then sweep."""
        while self.due:
            wait = min(self.due.values()) - time.time()
            if wait > 0:
                self._asked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._asked.wait(), wait)
                continue
            now = time.time()
            due = {batch_id for batch_id, at in self.soon.items() if at <= now}
            asked = {batch_id: list(self.waiting[batch_id]) for batch_id in due}
            self.swept = len(self.waiting)
            self.sweeps += 1
            for batch_id in due:  # read now: a wait asked again while the read runs is due again
                del self.due[batch_id], self.soon[batch_id]
            try:
                found = await self.read(due)
            except Exception as err:  # every due waiter gets the error: none may hang on a dead sweep
                _fail(asked, err)
                continue
            for batch_id in found:
                if batch_id not in asked and batch_id in self.waiting:
                    asked[batch_id] = list(self.waiting[batch_id])
                    self.due.pop(batch_id, None)
                    self.soon.pop(batch_id, None)
            _resolve(asked, found)

    async def read(self, due: set[str]) -> dict[str, Batch]:
        """Every batch of ``due``, and every other waiting batch the listed pages showed."""
        found: dict[str, Batch] = {}
        unseen = set(due)
        max_pages = max(1, int(len(due) * PAGES_PER_BATCH))
        if len(self.waiting) >= LIST_FROM and self._pages_to_reach(due) <= max_pages:
            oldest = min(self.created_at.get(b, 0.0) for b in due)
            await self._list(unseen, found, oldest, max_pages)
        for batch_id in sorted(unseen):
            self.calls += 1
            found[batch_id] = await self.client.batches.retrieve(batch_id)
        return found

    def _pages_to_reach(self, due: set[str]) -> int:
        """Pages of the listing down to the oldest due batch, counting only the waiting ones (a lower bound)."""
        oldest = min(self.created_at.get(b, 0.0) for b in due)
        newer = sum(1 for created in self.created_at.values() if created >= oldest)
        return math.ceil(newer / PAGE_SIZE)

    async def _list(self, unseen: set[str], found: dict[str, Batch], oldest: float, max_pages: int) -> None:
        after: str | openai.Omit = openai.omit
        for _ in range(max_pages):
            self.calls += 1
            page = await self.client.batches.list(limit=PAGE_SIZE, after=after)
            for batch in page.data:
                if batch.id in self.waiting:
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


_BOARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, StatusBoard]] = weakref.WeakKeyDictionary()


def status_board(client: openai.AsyncOpenAI) -> StatusBoard:
    """The board of this event loop for ``client``, made on first use."""
    boards = _BOARDS.setdefault(asyncio.get_running_loop(), {})
    key = id(client)
    if key not in boards or boards[key].client is not client:
        boards[key] = StatusBoard(client)
    return boards[key]
