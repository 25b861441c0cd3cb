"""Wait for a batch on the triggerer, so no worker slot is held for the hours a batch takes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import openai
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_openai_batch.core.polling import PollPolicy, Progress
from airflow_provider_openai_batch.hooks.openai_batch import TRANSIENT_ERRORS, OpenAIBatchHook
from airflow_provider_openai_batch.triggers.events import batch_event, error_event, timeout_event
from airflow_provider_openai_batch.triggers.status_board import status_board

if TYPE_CHECKING:
    from openai.types import Batch


# Each poll writes a progress line while the triggerer's board sweeps at most this many batches.
# Above that, a poll that changed nothing (status and counts) writes none, up to this many in a
# row: a thousand waits queued for hours would otherwise write a thousand identical lines a round,
# and each costs the triggerer ~1.5 ms to ship to its task log.
EVERY_POLL_UP_TO = 100
QUIET_POLLS_PER_LINE = 10


def _news(before: Batch | None, after: Batch) -> bool:
    """Did the status or the request counts change since the previous poll?"""
    if before is None:
        return True
    return before.status != after.status or before.request_counts != after.request_counts


class OpenAIBatchTrigger(BaseTrigger):
    """
    Poll one batch with ``AsyncOpenAI`` until it ends, the deadline passes, or errors persist.

    Reads start a few seconds after the batch was created and back off toward ``poll_interval``
    (``core.polling``), so a batch that ends early is noticed within seconds. Every value needed
    to resume is in the serialized kwargs — including the wall-clock ``deadline`` and the batch's
    ``created_at`` — and the rest of the schedule comes from the batch as read, so a triggerer
    restart rebuilds an identical wait. The API key is not among them: the connection is read
    again through ``aget_connection``.

    :param batch_id: the batch to wait for.
    :param conn_id: the connection to read it with.
    :param poll_interval: the longest time between two status reads (seconds).
    :param deadline: epoch seconds after which a ``timeout`` event is sent (``None``: no limit).
    :param max_consecutive_errors: transient failures in a row tolerated before an ``error`` event.
    :param created_at: the batch's ``created_at`` (epoch seconds), when the deferring task knows
        it: the first read then waits for its turn on the schedule (``None``: read it at once).
    :param fixed_schedule: read every ``poll_interval`` from the start, as before the schedule
        backed off (for comparisons).
    """

    def __init__(
        self,
        batch_id: str,
        conn_id: str = OpenAIBatchHook.default_conn_name,
        poll_interval: float = 60.0,
        deadline: float | None = None,
        max_consecutive_errors: int = 5,
        cancel_on_kill: bool = True,
        created_at: float | None = None,
        fixed_schedule: bool = False,
    ) -> None:
        super().__init__()
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.max_consecutive_errors = max_consecutive_errors
        self.cancel_on_kill = cancel_on_kill
        self.created_at = created_at
        self.fixed_schedule = fixed_schedule

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_id": self.batch_id,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "max_consecutive_errors": self.max_consecutive_errors,
                "cancel_on_kill": self.cancel_on_kill,
                "created_at": self.created_at,
                "fixed_schedule": self.fixed_schedule,
            },
        )

    @property
    def policy(self) -> PollPolicy:
        return PollPolicy(self.poll_interval, self.deadline, self.max_consecutive_errors, self.fixed_schedule)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The client is shared with the other triggers on this loop (not closed here); statuses
        # come from the loop's board, which reads each batch when due and many in one call.
        client = await OpenAIBatchHook(self.conn_id).get_shared_async_client()
        board = status_board(client)
        policy = self.policy
        errors = quiet_polls = 0
        created_at = self.created_at
        last: Batch | None = None
        while True:
            try:
                if created_at is None:  # a trigger deferred without it: read the batch now
                    batch = await client.batches.retrieve(self.batch_id)
                else:
                    now = time.time()
                    delay = policy.read_delay(now, created_at, Progress.from_batch(last) if last else None)
                    if errors:
                        delay = policy.sleep_for(now, errors, delay)
                    batch = await asyncio.wait_for(
                        board.next_status(self.batch_id, created_at, now + delay), self._left()
                    )
            except TimeoutError:
                yield TriggerEvent(timeout_event(self.batch_id, self.deadline, last.status if last else None))
                return
            except TRANSIENT_ERRORS as err:
                errors += 1
                decision = policy.after_error(errors, time.time())
                self.log.warning(
                    "Reading batch %s failed (%s, %d in a row): %s", self.batch_id, type(err).__name__, errors, err
                )
                if decision == "give_up":
                    yield TriggerEvent(error_event(self.batch_id, f"{errors} consecutive API errors: {err}"))
                    return
                if decision == "timeout":
                    yield TriggerEvent(timeout_event(self.batch_id, self.deadline))
                    return
                if created_at is None:
                    await asyncio.sleep(policy.sleep_for(time.time(), errors))
                continue
            except openai.APIStatusError as err:
                # Other 4xx (unknown batch, bad key, no permission) will not heal by waiting.
                yield TriggerEvent(error_event(self.batch_id, f"HTTP {err.status_code}: {err.message}"))
                return
            if board.swept <= EVERY_POLL_UP_TO or _news(last, batch) or quiet_polls >= QUIET_POLLS_PER_LINE:
                self.log.info(Progress.from_batch(batch).line(time.time()))
                quiet_polls = 0
            else:
                quiet_polls += 1
            errors, last, created_at = 0, batch, batch.created_at
            now = time.time()
            decision = policy.after_status(batch.status, now)
            if decision == "done":
                yield TriggerEvent(batch_event(batch))
                return
            if decision == "timeout":
                yield TriggerEvent(timeout_event(self.batch_id, self.deadline, batch.status))
                return

    def _left(self) -> float | None:
        """Seconds until the deadline (``None``: no deadline), so a wait for the board stops in time."""
        return None if self.deadline is None else max(self.deadline - time.time(), 0.0)

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: stop paying for the batch."""
        if not self.cancel_on_kill:
            return
        client = await OpenAIBatchHook(self.conn_id).get_shared_async_client()
        try:
            batch = await client.batches.cancel(self.batch_id)
            self.log.info("Cancelled batch %s on kill (now %s)", self.batch_id, batch.status)
        except openai.APIError as err:  # already ended (409), gone, or unreachable: nothing left to stop
            self.log.warning("Could not cancel batch %s on kill: %s", self.batch_id, err)
