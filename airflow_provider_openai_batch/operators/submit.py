"""Submit one shard as a batch and wait for it on the triggerer; a retry re-attaches, never re-bills."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import openai
from airflow.providers.common.compat.sdk import BaseOperator, Context
from airflow.providers.standard.triggers.temporal import DateTimeTrigger

from airflow_provider_openai_batch.core.handoffs import BatchRef, ShardRef, Submitted
from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES
from airflow_provider_openai_batch.core.polling import PollPolicy, Progress, token_limited
from airflow_provider_openai_batch.exceptions import BatchFailedError, BatchLostError, BatchTimeoutError
from airflow_provider_openai_batch.hooks.openai_batch import TRANSIENT_ERRORS, OpenAIBatchHook
from airflow_provider_openai_batch.links.batch import OpenAIBatchLink
from airflow_provider_openai_batch.operators.batch_lifecycle import (
    IDEMPOTENCY_KEY,
    BatchWaiting,
    batch_metadata,
    find_existing,
    idempotency_key,
    resubmit,
    submit_shard,
    wait_deadline,
)
from airflow_provider_openai_batch.triggers.events import batch_ref, check_event, failure_message
from airflow_provider_openai_batch.version_compat import log_fallbacks

if TYPE_CHECKING:
    from openai.types import Batch

# The task state store key holding ``{"batch_id": ..., "attempt": ...}`` for this task instance.
# Airflow keeps it across retries and clears of the task within a DAG run.
STATE_KEY = "openai_batch"


class OpenAIBatchSubmitOperator(BatchWaiting, BaseOperator):
    """
    Upload one shard, create its batch, and wait until it ends — deferred by default.

    The batch carries metadata (dag, task, run, map index and an idempotency key made of the job
    id and the shard's sha256). Before creating anything the operator looks for the batch it
    already made: first in Airflow's task state store (kept across retries and clears of the task
    in a DAG run), then among recent batches by idempotency key. So a retry, a cleared task or a
    killed worker re-attaches to the batch already billed. To force a new batch on purpose, change
    ``job_id`` (a new DAG run does) or pass ``reattach=False``.

    A batch OpenAI refuses for its enqueued-token limit is resubmitted after ``token_limit_wait``,
    at most ``token_limit_resubmits`` times, instead of failing the task.

    Returns (XCom) ``{"shard": ..., "batch": ...}``: ids, status, counts, usage — never results.

    :param shard: one entry of the build task's return value (use ``.expand(shard=...)``).
    :param conn_id: the OpenAI connection.
    :param deferrable: wait on the triggerer (default) instead of holding a worker slot.
    :param poll_interval: seconds between status reads.
    :param wait_timeout: give up waiting after this long; the batch is then cancelled.
    :param metadata: extra metadata pairs to tag the batch with.
    :param output_expires_after: seconds after which OpenAI deletes the output files.
    :param reattach: look for this shard's earlier batch before creating one.
    :param token_limit_resubmits: resubmissions after a ``token_limit_exceeded`` refusal.
    :param token_limit_wait: the wait before each of them.
    :param max_consecutive_errors: transient API errors in a row tolerated while waiting.
    """

    template_fields: Sequence[str] = ("shard", "metadata")
    operator_extra_links = (OpenAIBatchLink(),)

    def __init__(
        self,
        *,
        shard: Mapping[str, Any],
        conn_id: str = OpenAIBatchHook.default_conn_name,
        deferrable: bool = True,
        poll_interval: float = 60.0,
        wait_timeout: timedelta | None = timedelta(hours=48),
        metadata: Mapping[str, str] | None = None,
        output_expires_after: int | None = None,
        reattach: bool = True,
        token_limit_resubmits: int = 3,
        token_limit_wait: timedelta = timedelta(minutes=10),
        max_consecutive_errors: int = 5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.metadata = dict(metadata or {})
        self.output_expires_after = output_expires_after
        self.reattach = reattach
        self.token_limit_resubmits = token_limit_resubmits
        self.token_limit_wait = token_limit_wait
        self.max_consecutive_errors = max_consecutive_errors

    @property
    def shard_ref(self) -> ShardRef:
        """The rendered ``shard`` argument as the record the build task wrote (refused if it is not one)."""
        return ShardRef.from_json(self.shard)

    def idempotency_key(self) -> str:
        return idempotency_key(self.shard_ref)

    def batch_metadata(self, context: Context, resubmit: int = 0) -> dict[str, str]:
        return batch_metadata(context, self.shard_ref, self.metadata, resubmit)

    # -- entry points -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        log_fallbacks(self.log)
        if self.shard_ref.requests == 0:  # the answer cache answered the whole job: no batch to make
            self.log.info(
                "Nothing to submit: every request of job %s was answered from the cache", self.shard_ref.job_id
            )
            return Submitted(shard=self.shard_ref, batch=BatchRef(id="", status="completed")).to_json()
        hook = self.hook
        batch, attempt = self._attach_or_submit(hook, context)
        return self._follow(context, hook, batch, attempt, wait_deadline(self.wait_timeout))

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        attempt: int = 0,
        deadline: float | None = None,
        waits: int = 0,
    ) -> dict[str, Any]:
        read = check_event(event)
        if read.status == "timeout":
            self.timed_out(read.batch_id, read.batch_status)
        if read.status == "error":
            raise BatchLostError(f"Lost track of batch {read.batch_id}: {read.message}", batch_id=read.batch_id)
        return self._on_end(context, read.ended(), attempt, deadline, waits)

    def resubmit(
        self,
        context: Context,
        event: Any = None,
        attempt: int = 1,
        deadline: float | None = None,
        previous_batch_id: str = "",
        waits: int = 1,
    ) -> dict[str, Any]:
        """Resumed after the token-limit wait: the same file again, under this attempt's key."""
        hook = self.hook
        batch = resubmit(
            hook,
            hook.get_batch(previous_batch_id),
            self.batch_metadata(context, attempt),
            output_expires_after=self.output_expires_after,
            log=self.log,
        )
        return self._follow(context, hook, batch, attempt, deadline, waits)

    # -- finding and remembering the batch --------------------------------------------------

    def _attach_or_submit(self, hook: OpenAIBatchHook, context: Context) -> tuple[Batch, int]:
        recorded = self._recorded(context) if self.reattach else None
        if recorded is not None:
            batch = self._recorded_batch(hook, *recorded)
            if batch is not None:
                return batch, recorded[1]
        batch = submit_shard(
            hook,
            self.shard_ref,
            self.batch_metadata(context),
            reattach=self.reattach,
            output_expires_after=self.output_expires_after,
            log=self.log,
        )
        return batch, 0

    def _recorded(self, context: Context) -> tuple[str, int] | None:
        store = context.get("task_state_store")
        value = store.get(STATE_KEY) if store is not None else None
        if not isinstance(value, dict):
            return None
        batch_id, attempt = value.get("batch_id"), value.get("attempt", 0)
        if isinstance(batch_id, str) and isinstance(attempt, int):
            return batch_id, attempt
        return None

    def _recorded_batch(self, hook: OpenAIBatchHook, batch_id: str, attempt: int) -> Batch | None:
        """The batch the task state names, if it still exists and belongs to this very shard."""
        try:
            batch = hook.get_batch(batch_id)
        except openai.NotFoundError:
            self.log.warning("Batch %s recorded in the task state no longer exists", batch_id)
            return None
        if (batch.metadata or {}).get(IDEMPOTENCY_KEY) != idempotency_key(self.shard_ref, attempt):
            self.log.info("Batch %s recorded in the task state is for another job or file; not re-using it", batch_id)
            return None
        self.log.info("Re-attaching to batch %s (%s) recorded in the task state", batch.id, batch.status)
        return batch

    def _remember(self, context: Context, batch_id: str, attempt: int) -> None:
        """Record the batch before waiting, so a retry or the extra link finds it."""
        self.remember_batch(context, batch_id)
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, {"batch_id": batch_id, "attempt": attempt})

    def waited_batch_id(self, context: Context) -> str | None:
        recorded = self._recorded(context)
        return recorded[0] if recorded is not None else super().waited_batch_id(context)

    # -- waiting ----------------------------------------------------------------------------

    def _follow(
        self,
        context: Context,
        hook: OpenAIBatchHook,
        batch: Batch,
        attempt: int,
        deadline: float | None,
        waits: int = 0,
    ) -> dict[str, Any]:
        """
        Remember the batch, then act on its end — now if it has ended, else after waiting.

        ``attempt`` is the batch's place in the shard's chain of token-limit resubmissions (its
        key's suffix); ``waits`` counts the resubmissions this try made, the ones the budget bounds.
        """
        self._remember(context, batch.id, attempt)
        if batch.status in TERMINAL_STATUSES:
            return self._on_end(context, batch_ref(batch), attempt, deadline, waits)
        if self.deferrable:
            kwargs = {"attempt": attempt, "deadline": deadline, "waits": waits}
            self.defer_on_batch(context, batch.id, deadline, "execute_complete", kwargs, batch.created_at)
        return self._on_end(context, self._wait_here(hook, batch.id, deadline), attempt, deadline, waits)

    def _wait_here(self, hook: OpenAIBatchHook, batch_id: str, deadline: float | None) -> BatchRef:
        """The non-deferrable wait: the same policy and read schedule as the trigger, on the worker."""
        policy = PollPolicy(self.poll_interval, deadline, self.max_consecutive_errors)
        errors, delay = 0, None
        while True:
            try:
                batch = hook.get_batch(batch_id)
            except TRANSIENT_ERRORS as err:
                errors += 1
                self.log.warning("Reading batch %s failed (%d in a row): %s", batch_id, errors, err)
                decision = policy.after_error(errors, time.time())
                if decision == "give_up":
                    raise BatchLostError(
                        f"Lost track of batch {batch_id}: {errors} consecutive API errors", batch_id=batch_id
                    ) from err
                if decision == "timeout":
                    self.timed_out(batch_id, None)
                time.sleep(policy.sleep_for(time.time(), errors, delay))
                continue
            errors = 0
            progress = Progress.from_batch(batch)
            self.log.info(progress.line(time.time()))
            decision = policy.after_status(batch.status, time.time())
            if decision == "done":
                return batch_ref(batch)
            if decision == "timeout":
                self.timed_out(batch_id, batch.status)
            delay = policy.read_delay(time.time(), batch.created_at, progress)
            time.sleep(delay)

    # -- endings ----------------------------------------------------------------------------

    def _on_end(
        self, context: Context, batch: BatchRef, attempt: int, deadline: float | None, waits: int
    ) -> dict[str, Any]:
        if token_limited(batch.status, batch.errors):
            return self._after_token_limit(context, batch, attempt, deadline, waits)
        return self._finish(batch)

    def _after_token_limit(
        self, context: Context, batch: BatchRef, attempt: int, deadline: float | None, waits: int
    ) -> dict[str, Any]:
        """
        Wait for earlier batches to drain the token queue, then submit the same file again.

        A refused batch was never billed, so resubmitting cannot pay twice; looking up the next
        key first still keeps a retried task from stacking up copies of what it already sent.
        """
        hook = self.hook
        following = attempt + 1
        if self.reattach and (existing := find_existing(hook, idempotency_key(self.shard_ref, following), self.log)):
            self.log.info("Batch %s was already resubmitted as %s", batch.id, existing.id)
            return self._follow(context, hook, existing, following, deadline, waits)
        if waits >= self.token_limit_resubmits:
            raise BatchFailedError(
                f"Batch {batch.id} was refused for OpenAI's enqueued-token limit after {waits} resubmission(s) "
                f"in this try ({batch.first_error.get('message')}). Run fewer batches of this "
                "model at once (a pool with include_deferred), or raise token_limit_resubmits / token_limit_wait.",
                batch_id=batch.id,
            )
        resume_at = time.time() + self.token_limit_wait.total_seconds()
        if deadline is not None and resume_at >= deadline:
            raise BatchTimeoutError(
                f"Batch {batch.id} was refused for OpenAI's enqueued-token limit and wait_timeout="
                f"{self.wait_timeout} ends before the next resubmission; this is a wait timeout, not a batch failure.",
                batch_id=batch.id,
            )
        self.log.warning(
            "Batch %s was refused for OpenAI's enqueued-token limit; resubmitting the same file in %s (%d of %d)",
            batch.id,
            self.token_limit_wait,
            waits + 1,
            self.token_limit_resubmits,
        )
        kwargs = {"attempt": following, "deadline": deadline, "previous_batch_id": batch.id, "waits": waits + 1}
        if self.deferrable:
            moment = datetime.fromtimestamp(resume_at, tz=UTC)
            self.defer(trigger=DateTimeTrigger(moment=moment), method_name="resubmit", kwargs=kwargs)
        time.sleep(max(resume_at - time.time(), 0.0))
        return self.resubmit(context, None, following, deadline, batch.id, waits + 1)

    def _finish(self, batch: BatchRef) -> dict[str, Any]:
        shard = self.shard_ref
        if batch.status == "failed":
            raise BatchFailedError(failure_message(batch, shard.path), batch_id=batch.id, path=shard.path)
        counts = batch.request_counts
        self.log.info(
            "Batch %s ended %s: %s completed, %s failed of %s",
            batch.id,
            batch.status,
            counts and counts.completed,
            counts and counts.failed,
            counts and counts.total,
        )
        if batch.status in ("expired", "cancelled"):
            self.log.warning(
                "Batch %s %s: its finished requests are passed on; the rest are not", batch.id, batch.status
            )
        return Submitted(shard=shard, batch=batch).to_json()
