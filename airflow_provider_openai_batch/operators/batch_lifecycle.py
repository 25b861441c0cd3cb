"""One batch's life, the same for a shard's batch and the results task's retry batches.

Its metadata and idempotency key, find-or-create, the deferral with a deadline, and the cancel on
timeout or kill live here, so the submit and results operators cannot drift apart.

The key is made of the job id and the sha256 of the batch's file (plus the retry attempt and the
token-limit resubmission, when there are any). Looking it up before creating anything means a
retry, a cleared task or a crashed worker finds the batch it already paid for. A create is never
retried blindly: its reply may be lost after OpenAI made the batch, so after any failed create
the key is looked up again before the next try, and if one key ever names two batches, the
oldest live one is kept and the others are cancelled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason

from airflow_provider_openai_batch.core.handoffs import ShardRef
from airflow_provider_openai_batch.core.limits import MAX_METADATA_PAIRS, TERMINAL_STATUSES
from airflow_provider_openai_batch.exceptions import BatchTimeoutError, OpenAIBatchInputError
from airflow_provider_openai_batch.hooks.openai_batch import TRANSIENT_ERRORS, OpenAIBatchHook
from airflow_provider_openai_batch.links.batch import BATCH_LINK_XCOM
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context
    from openai.types import Batch

# Look for an earlier batch of the same shard among batches created this long ago at most.
REATTACH_LOOKBACK = timedelta(days=3)
# Two batches of one key come from one create retried: look this far past the newest for others.
DUPLICATE_WINDOW = timedelta(hours=1)
# Airflow's own deferral timeout fires this long after the wait's deadline: the trigger reports the
# timeout itself first; this is the backstop for a wait no triggerer is running.
DEFERRAL_TIMEOUT_GRACE = timedelta(minutes=5)

IDEMPOTENCY_KEY = "idempotency_key"
# Batches in these states will not produce answers: a duplicate in one of them is not worth keeping.
_DEAD = frozenset({"failed", "cancelling", "cancelled", "expired"})

_LOG = logging.getLogger(__name__)


# -- identity -----------------------------------------------------------------------------------


def idempotency_key(shard: ShardRef, resubmit: int = 0) -> str:
    """
    Stable across retries and reruns of the same file; changes with ``job_id`` or the file's bytes.

    A results retry shard carries its ``attempt`` (two attempts may retry byte-identical files);
    ``resubmit`` counts the token-limit resubmissions of the same file.
    """
    key = f"{shard.job_id}:{shard.sha256[:32]}"
    if shard.attempt > 1:
        key += f":attempt{shard.attempt}"
    return f"{key}:resubmit{resubmit}" if resubmit else key


def batch_metadata(
    context: Context, shard: ShardRef, extra: Mapping[str, Any] | None = None, resubmit: int = 0
) -> dict[str, str]:
    """What a batch is tagged with: where in Airflow it comes from, its job, shard, attempt and key."""
    ti = context["ti"]
    base = {
        "airflow_dag_id": ti.dag_id,
        "airflow_task_id": ti.task_id,
        "airflow_run_id": ti.run_id,
        "airflow_map_index": str(ti.map_index),
        "openai_batch_job": shard.job_id,
        "openai_batch_shard": str(shard.index),
        IDEMPOTENCY_KEY: idempotency_key(shard, resubmit),
    }
    if shard.attempt > 1:
        base["openai_batch_attempt"] = str(shard.attempt)
    merged = {**{k: str(v) for k, v in (extra or {}).items()}, **base}
    if len(merged) > MAX_METADATA_PAIRS:
        raise OpenAIBatchInputError(
            f"batch metadata would have {len(merged)} pairs, over OpenAI's {MAX_METADATA_PAIRS}; "
            f"the provider uses {len(base)}, so pass at most {MAX_METADATA_PAIRS - len(base)} of your own"
        )
    return {k[:64]: v[:512] for k, v in merged.items()}


# -- find or create -----------------------------------------------------------------------------


def submit_shard(
    hook: OpenAIBatchHook,
    shard: ShardRef,
    metadata: Mapping[str, str],
    *,
    reattach: bool = True,
    output_expires_after: int | None = None,
    log: Any = None,
) -> Batch:
    """
    Return the shard's batch: the one already created under its idempotency key, else a new one.

    :param hook: the hook to call the API with.
    :param shard: the shard to submit, as the build task (or a results retry) describes it.
    :param metadata: the batch's metadata; its ``idempotency_key`` (defaulting to the shard's) is
        the value looked up.
    :param reattach: look for an earlier batch first; ``False`` always creates a new one.
    :param output_expires_after: seconds after which OpenAI deletes the output files.
    :param log: a logger (defaults to this module's).
    """
    log = log or _LOG
    metadata = dict(metadata)
    key = metadata.setdefault(IDEMPOTENCY_KEY, idempotency_key(shard))
    if reattach:
        found = find_existing(hook, key, log)
        if found is not None:
            log.info("Re-attaching to batch %s (%s) created earlier for this shard", found.id, found.status)
            return found
    uploaded = hook.upload_file(shard.path)
    log.info("Uploaded %s as %s (%d requests, %d bytes)", shard.path, uploaded.id, shard.requests, uploaded.bytes)
    batch = create_once(hook, metadata, uploaded.id, shard.endpoint, output_expires_after, log)
    log.info("Created batch %s for shard %d of job %s", batch.id, shard.index, shard.job_id)
    return batch


def resubmit(
    hook: OpenAIBatchHook,
    previous: Batch,
    metadata: Mapping[str, str],
    *,
    output_expires_after: int | None = None,
    log: Any = None,
) -> Batch:
    """
    Find-or-create a batch over the same input file as ``previous`` under ``metadata``'s key.

    Used after OpenAI refused a batch for its enqueued-token limit: the uploaded file is still
    there, so it is not uploaded again, and the lookup keeps a retried task from creating twice.
    """
    log = log or _LOG
    found = find_existing(hook, metadata[IDEMPOTENCY_KEY], log)
    if found is not None:
        log.info("Re-attaching to batch %s (%s) already resubmitted", found.id, found.status)
        return found
    batch = create_once(hook, metadata, previous.input_file_id, previous.endpoint, output_expires_after, log)
    log.info("Resubmitted the file of batch %s as batch %s", previous.id, batch.id)
    return batch


def create_once(
    hook: OpenAIBatchHook,
    metadata: Mapping[str, str],
    input_file_id: str,
    endpoint: str,
    output_expires_after: int | None = None,
    log: Any = None,
) -> Batch:
    """
    Create one batch, whatever the network does to the call.

    A failed create may still have made the batch (a reset before the reply, a 5xx after the
    commit), so each transient failure is followed by a lookup of the key before the next try;
    the tries are bounded by the hook's ``call_retries``.
    """
    log = log or _LOG
    key = metadata[IDEMPOTENCY_KEY]
    failures = 0
    while True:
        try:
            batch = hook.create_batch(
                input_file_id=input_file_id,
                endpoint=endpoint,
                metadata=metadata,
                output_expires_after_seconds=output_expires_after,
            )
        except TRANSIENT_ERRORS as error:
            failures += 1
            wait = hook.call_retries.note(f"Create of the batch keyed {key}", error, failures, log)
            time.sleep(wait)
            found = find_existing(hook, key, log)
            if found is not None:
                log.warning("The failed create had made batch %s (%s); using it", found.id, found.status)
                return found
            log.info("No batch has key %s: creating it again", key)
            continue
        # After a failed try, a batch it made may only now be listed: keep exactly one.
        return (find_existing(hook, key, log) or batch) if failures else batch


def find_existing(hook: OpenAIBatchHook, key: str, log: Any = None) -> Batch | None:
    """The batch tagged with ``key`` (created within ``REATTACH_LOOKBACK``); duplicates are cancelled."""
    created_after = time.time() - REATTACH_LOOKBACK.total_seconds()
    found = hook.find_batches({IDEMPOTENCY_KEY: key}, created_after=created_after, window=DUPLICATE_WINDOW)
    if len(found) <= 1:
        return found[0] if found else None
    keep = _keeper(found)
    for extra in found:
        if extra.id != keep.id:
            _drop_duplicate(hook, extra, keep, key, log or _LOG)
    return keep


def _keeper(newest_first: list[Batch]) -> Batch:
    """The oldest batch that can still answer (else the newest): the one the others duplicate."""
    live = [b for b in reversed(newest_first) if b.status not in _DEAD]
    return min(live, key=lambda b: b.created_at) if live else newest_first[0]


def _drop_duplicate(hook: OpenAIBatchHook, extra: Batch, keep: Batch, key: str, log: Any) -> None:
    if extra.status in TERMINAL_STATUSES or extra.status == "cancelling":
        log.warning("Batch %s (%s) duplicates batch %s (key %s); it has ended", extra.id, extra.status, keep.id, key)
        return
    log.warning("Batch %s duplicates batch %s (key %s): cancelling it, one batch per shard", extra.id, keep.id, key)
    cancel_quietly(hook, extra.id, log)


def cancel_quietly(hook: OpenAIBatchHook, batch_id: str, log: Any = None) -> None:
    """Best-effort cancel: the failure that led here matters more than a failed cancel."""
    try:
        hook.cancel_batch(batch_id)
        (log or _LOG).info("Cancelled batch %s", batch_id)
    except Exception as err:
        (log or _LOG).warning("Could not cancel batch %s: %s", batch_id, type(err).__name__)


# -- waiting ------------------------------------------------------------------------------------


def wait_deadline(wait_timeout: timedelta | None) -> float | None:
    """Epoch seconds: a wall clock survives the task moving to a triggerer or another worker."""
    return None if wait_timeout is None else time.time() + wait_timeout.total_seconds()


class BatchWaiting:
    """
    The wait shared by the submit and results operators: defer with a deadline, cancel at the end.

    The operator provides ``conn_id``, ``poll_interval``, ``wait_timeout`` and
    ``max_consecutive_errors``. The batch being waited on is pushed to XCom (key ``batch_id``)
    before each deferral, so Airflow's deferral timeout and a kill can cancel it.
    """

    conn_id: str
    poll_interval: float
    wait_timeout: timedelta | None
    max_consecutive_errors: int
    log: Any
    defer: Callable[..., NoReturn]

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(conn_id=self.conn_id)

    def defer_on_batch(
        self,
        context: Context,
        batch_id: str,
        deadline: float | None,
        method_name: str,
        kwargs: dict[str, Any],
        created_at: float | None = None,
    ) -> NoReturn:
        """Hand the wait to the triggerer; with the batch's ``created_at`` its first read keeps to the schedule."""
        self.remember_batch(context, batch_id)
        self.defer(
            trigger=OpenAIBatchTrigger(
                batch_id=batch_id,
                conn_id=self.conn_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                max_consecutive_errors=self.max_consecutive_errors,
                created_at=created_at,
            ),
            method_name=method_name,
            kwargs=kwargs,
            timeout=self._deferral_timeout(deadline),
        )

    def remember_batch(self, context: Context, batch_id: str) -> None:
        self._batch_id = batch_id
        context["ti"].xcom_push(key="batch_id", value=batch_id)
        # The extra link's target, decided here where the connection is at hand: "" when the batch
        # does not live on OpenAI's own API (its dashboard would not know it).
        context["ti"].xcom_push(key=BATCH_LINK_XCOM, value=self.hook.dashboard_url(batch_id) or "")

    def waited_batch_id(self, context: Context) -> str | None:
        ti = context["ti"]
        value = ti.xcom_pull(task_ids=ti.task_id, key="batch_id", map_indexes=ti.map_index)
        return value if isinstance(value, str) else None

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's deferral timeout (the backstop of ``wait_timeout``) cancels the batch before failing."""
        failure = (next_kwargs or {}).get("error")
        if next_method == TRIGGER_FAIL_REPR and failure == TriggerFailureReason.TRIGGER_TIMEOUT:
            batch_id = self.waited_batch_id(context)
            if batch_id:
                cancel_quietly(self.hook, batch_id, self.log)
            raise BatchTimeoutError(self.timeout_message(batch_id, None), batch_id=batch_id)
        return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]

    def on_kill(self) -> None:
        """Killed on the worker (a wait there, or between create and defer): stop the batch."""
        batch_id = getattr(self, "_batch_id", None)
        if batch_id:
            cancel_quietly(self.hook, batch_id, self.log)

    def timed_out(self, batch_id: str, batch_status: str | None) -> NoReturn:
        cancel_quietly(self.hook, batch_id, self.log)
        raise BatchTimeoutError(self.timeout_message(batch_id, batch_status), batch_id=batch_id)

    def timeout_message(self, batch_id: str | None, batch_status: str | None) -> str:
        return (
            f"Timed out waiting for batch {batch_id or '(unknown)'} (wait_timeout={self.wait_timeout}); the batch "
            f"was still {batch_status or 'running'} and has been cancelled. This is a wait timeout, not a batch "
            "failure: finished requests are in its output file."
        )

    def _deferral_timeout(self, deadline: float | None) -> timedelta | None:
        if deadline is None:
            return None
        grace = max(DEFERRAL_TIMEOUT_GRACE, timedelta(seconds=2 * self.poll_interval))
        return timedelta(seconds=max(deadline - time.time(), 0.0)) + grace
