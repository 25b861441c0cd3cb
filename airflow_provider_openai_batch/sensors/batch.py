"""Wait for a batch submitted elsewhere: the sensor only reads, so retrying it never submits again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
)

from airflow_provider_openai_batch.core.handoffs import BatchRef
from airflow_provider_openai_batch.core.polling import PollPolicy, Progress
from airflow_provider_openai_batch.exceptions import (
    BatchFailedError,
    BatchIncompleteError,
    BatchLostError,
    OpenAIBatchInputError,
)
from airflow_provider_openai_batch.hooks.openai_batch import TRANSIENT_ERRORS, OpenAIBatchHook
from airflow_provider_openai_batch.links.batch import OpenAIBatchLink
from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger
from airflow_provider_openai_batch.triggers.events import batch_ref, check_event, failure_message

if TYPE_CHECKING:
    from openai.types import Batch

# The task state store key counting failed status reads in a row, so the budget holds across the
# separate processes of reschedule mode.
ERRORS_KEY = "openai_batch_sensor_errors"


class OpenAIBatchSensor(BaseSensorOperator):
    """
    Wait until a batch ends, in ``poke``, ``reschedule`` or deferrable mode.

    For batches created outside this DAG (another system, a notebook, an earlier run). It never
    cancels the batch: it does not own it. Every mode reads on the trigger's schedule: a tenth of
    the batch's age between two reads, at least a few seconds and at most ``poke_interval``
    (``exponential_backoff=True`` keeps Airflow's own). Transient API errors are tolerated up to
    ``max_consecutive_errors`` reads in a row, in every mode.

    Returns (XCom) the batch's summary — ids, status, counts, usage — and pushes ``batch_id`` for
    the "OpenAI batch" extra link.

    :param batch_id: the batch to wait for (templated).
    :param conn_id: the OpenAI connection.
    :param deferrable: wait on the triggerer instead of in a worker slot.
    :param allow_partial: ``expired`` and ``cancelled`` batches succeed (their finished requests
        are in the output file); ``False`` fails the task on them.
    :param max_consecutive_errors: transient API errors in a row before the task fails.
    """

    template_fields: Sequence[str] = ("batch_id",)
    operator_extra_links = (OpenAIBatchLink(),)

    def __init__(
        self,
        *,
        batch_id: str,
        conn_id: str = OpenAIBatchHook.default_conn_name,
        deferrable: bool = False,
        allow_partial: bool = True,
        max_consecutive_errors: int = 5,
        poke_interval: float | timedelta = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.batch_id = batch_id
        self.conn_id = conn_id
        self.deferrable = deferrable
        self.allow_partial = allow_partial
        self.max_consecutive_errors = max_consecutive_errors
        self._seen: Batch | None = None  # the latest poke's read, which places the next one

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(conn_id=self.conn_id)

    @property
    def policy(self) -> PollPolicy:
        return PollPolicy(self.poke_interval, None, self.max_consecutive_errors)

    def execute(self, context: Context) -> Any:
        if not str(self.batch_id or "").strip():
            raise OpenAIBatchInputError(
                f"{type(self).__name__} {self.task_id!r} has no batch_id to wait for (it rendered empty). Pass the "
                'id of a batch made elsewhere, e.g. batch_id="{{ params.batch_id }}" and trigger with '
                f"""-c '{{"batch_id": "batch_…"}}', or batch_id="batch_…" in the DAG file."""
            )
        context["ti"].xcom_push(key="batch_id", value=self.batch_id)
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        self.defer(
            trigger=OpenAIBatchTrigger(
                batch_id=self.batch_id,
                conn_id=self.conn_id,
                poll_interval=self.poke_interval,
                deadline=time.time() + self.timeout,
                max_consecutive_errors=self.max_consecutive_errors,
                cancel_on_kill=False,
                created_at=self._seen.created_at if self._seen else None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        try:
            batch = self.hook.get_batch(self.batch_id)
        except TRANSIENT_ERRORS as err:
            errors = self._count_error(context)
            self.log.warning("Reading batch %s failed (%d in a row): %s", self.batch_id, errors, err)
            if self.policy.after_error(errors, time.time()) == "give_up":
                raise BatchLostError(
                    f"Lost track of batch {self.batch_id}: {errors} consecutive API errors", batch_id=self.batch_id
                ) from err
            return False
        self._reset_errors(context)
        self._seen = batch
        self.log.info(Progress.from_batch(batch).line(time.time()))
        if self.policy.after_status(batch.status, time.time()) != "done":
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._outcome(batch_ref(batch)))

    def _get_next_poke_interval(self, started_at: Any, run_duration: Callable[[], float], poke_count: int) -> float:
        """The wait before the next poke (``reschedule`` mode too): the trigger's schedule."""
        if self.exponential_backoff or self._seen is None:
            return super()._get_next_poke_interval(started_at, run_duration, poke_count)
        seen = self._seen
        return self.policy.read_delay(time.time(), seen.created_at, Progress.from_batch(seen))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        read = check_event(event)
        if read.status == "timeout":
            raise AirflowSensorTimeout(
                f"Batch {self.batch_id} was still {read.batch_status or 'running'} after the sensor's "
                f"timeout of {self.timeout:.0f}s; the batch was left running."
            )
        if read.status == "error":
            raise BatchLostError(f"Lost track of batch {read.batch_id}: {read.message}", batch_id=read.batch_id)
        return self._outcome(read.ended())

    def _outcome(self, batch: BatchRef) -> dict[str, Any]:
        if batch.status == "failed":
            raise BatchFailedError(failure_message(batch), batch_id=batch.id)
        if batch.status in ("expired", "cancelled"):
            if not self.allow_partial:
                raise BatchIncompleteError(
                    f"Batch {batch.id} ended {batch.status} (allow_partial=False)",
                    batch_id=batch.id,
                    status=batch.status,
                )
            self.log.warning("Batch %s ended %s: only part of its requests have results", batch.id, batch.status)
        return batch.to_json()

    # The error count lives in the task state store when there is one: in reschedule mode each
    # poke runs in a new process, and an attribute would reset to zero every time.

    def _count_error(self, context: Context) -> int:
        store = context.get("task_state_store")
        previous = store.get(ERRORS_KEY, 0) if store is not None else getattr(self, "_errors", 0)
        errors = (previous if isinstance(previous, int) else 0) + 1
        self._errors = errors
        if store is not None:
            store.set(ERRORS_KEY, errors)
        return errors

    def _reset_errors(self, context: Context) -> None:
        store = context.get("task_state_store")
        if store is not None and getattr(self, "_errors", None) != 0:
            store.delete(ERRORS_KEY)
        self._errors = 0
