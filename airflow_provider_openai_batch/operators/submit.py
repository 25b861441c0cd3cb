"""Submit one shard as a batch and wait for it on the triggerer; a retry re-attaches, never re-bills."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from airflow_provider_openai_batch.core.limits import MAX_METADATA_PAIRS, TERMINAL_STATUSES
from airflow_provider_openai_batch.core.polling import PollPolicy, Progress
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.links.batch import OpenAIBatchLink
from airflow_provider_openai_batch.operators.submission import idempotency_key, submit_shard
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from airflow_provider_openai_batch.triggers.events import batch_summary, check_event

if TYPE_CHECKING:
    from openai.types import Batch


class OpenAIBatchSubmitOperator(BaseOperator):
    """
    Upload one shard, create its batch, and wait until it ends — deferred by default.

    The batch carries metadata (dag, task, run, map index and an idempotency key made of the job
    id and the shard's sha256). Before creating anything the operator looks for a batch with the
    same key, so a retry, a cleared task or a restarted worker re-attaches to the batch already
    billed. To force a new batch on purpose, change ``job_id`` or pass ``reattach=False``.

    Returns (XCom) the batch's summary: ids, status, counts, usage — never results.

    :param shard: one entry of the build task's ``shards`` XCom (use ``.expand(shard=...)``).
    :param conn_id: the OpenAI connection.
    :param deferrable: wait on the triggerer (default) instead of holding a worker slot.
    :param poll_interval: seconds between status reads.
    :param wait_timeout: give up waiting after this long; the batch is then cancelled.
    :param metadata: extra metadata pairs to tag the batch with.
    :param output_expires_after: seconds after which OpenAI deletes the output files.
    :param reattach: look for this shard's earlier batch before creating one.
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

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(conn_id=self.conn_id)

    def idempotency_key(self) -> str:
        return idempotency_key(self.shard)

    def batch_metadata(self, context: Context) -> dict[str, str]:
        ti = context["ti"]
        base = {
            "airflow_dag_id": ti.dag_id,
            "airflow_task_id": ti.task_id,
            "airflow_run_id": ti.run_id,
            "airflow_map_index": str(ti.map_index),
            "openai_batch_job": str(self.shard["job_id"]),
            "openai_batch_shard": str(self.shard["index"]),
            "idempotency_key": self.idempotency_key(),
        }
        merged = {**{k: str(v) for k, v in self.metadata.items()}, **base}
        if len(merged) > MAX_METADATA_PAIRS:
            raise ValueError(
                f"batch metadata would have {len(merged)} pairs, over OpenAI's {MAX_METADATA_PAIRS}; "
                f"the provider uses {len(base)}, so pass at most {MAX_METADATA_PAIRS - len(base)} of your own"
            )
        return {k[:64]: v[:512] for k, v in merged.items()}

    def execute(self, context: Context) -> dict[str, Any]:
        hook = self.hook
        batch = self._submit(hook, context)
        context["ti"].xcom_push(key="batch_id", value=batch.id)
        if batch.status in TERMINAL_STATUSES:
            return self._finish(batch_summary(batch))
        if self.deferrable:
            self.defer(
                trigger=OpenAIBatchTrigger(
                    batch_id=batch.id,
                    conn_id=self.conn_id,
                    poll_interval=self.poll_interval,
                    deadline=self._deadline(),
                ),
                method_name="execute_complete",
            )
        return self._finish(self._wait_here(hook, batch.id))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = check_event(event)
        if event["status"] == "timeout":
            self._timed_out(event["batch_id"], event.get("batch_status"))
        if event["status"] == "error":
            raise AirflowException(f"Lost track of batch {event['batch_id']}: {event['message']}")
        return self._finish(event["batch"])

    def on_kill(self) -> None:
        batch_id = getattr(self, "_batch_id", None)
        if batch_id:
            self._cancel_quietly(batch_id)

    # -- steps ------------------------------------------------------------------------------

    def _submit(self, hook: OpenAIBatchHook, context: Context) -> Batch:
        batch = submit_shard(
            hook,
            self.shard,
            self.batch_metadata(context),
            reattach=self.reattach,
            output_expires_after=self.output_expires_after,
            log=self.log,
        )
        self._batch_id = batch.id
        return batch

    def _deadline(self) -> float | None:
        return None if self.wait_timeout is None else time.time() + self.wait_timeout.total_seconds()

    def _wait_here(self, hook: OpenAIBatchHook, batch_id: str) -> dict[str, Any]:
        """The non-deferrable wait: the same policy as the trigger, on the worker."""
        policy = PollPolicy(self.poll_interval, self._deadline())
        while True:
            batch = hook.get_batch(batch_id)
            self.log.info(Progress.from_batch(batch).line(time.time()))
            decision = policy.after_status(batch.status, time.time())
            if decision == "done":
                return batch_summary(batch)
            if decision == "timeout":
                self._timed_out(batch_id, batch.status)
            time.sleep(policy.sleep_for(time.time()))

    def _timed_out(self, batch_id: str, batch_status: str | None) -> NoReturn:
        self._cancel_quietly(batch_id)
        raise AirflowException(
            f"Timed out waiting for batch {batch_id} (wait_timeout={self.wait_timeout}); the batch was still "
            f"{batch_status or 'running'} and has been cancelled. This is a wait timeout, not a batch failure."
        )

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        status = batch["status"]
        if status == "failed":
            raise AirflowException(_failure_message(batch, self.shard))
        counts = batch.get("request_counts") or {}
        self.log.info(
            "Batch %s ended %s: %s completed, %s failed of %s",
            batch["id"],
            status,
            counts.get("completed"),
            counts.get("failed"),
            counts.get("total"),
        )
        return {"shard": dict(self.shard), "batch": batch}

    def _cancel_quietly(self, batch_id: str) -> None:
        try:
            self.hook.cancel_batch(batch_id)
            self.log.info("Cancelled batch %s", batch_id)
        except Exception as err:  # cancelling is best effort; the original failure matters more
            self.log.warning("Could not cancel batch %s: %s", batch_id, err)


def _failure_message(batch: Mapping[str, Any], shard: Mapping[str, Any]) -> str:
    errors = batch.get("errors") or []
    lines = [
        f"  {shard.get('path')}:{e['line']}: [{e.get('code')}] {e.get('message')}"
        if e.get("line")
        else f"  [{e.get('code')}] {e.get('message')}"
        for e in errors
    ]
    more = batch.get("errors_total", len(errors)) - len(errors)
    if more > 0:
        lines.append(f"  ... and {more} more")
    return f"Batch {batch['id']} failed with {batch.get('errors_total', len(errors))} error(s):\n" + "\n".join(lines)
