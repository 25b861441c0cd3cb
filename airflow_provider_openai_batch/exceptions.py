"""
What the provider raises when a run fails, as one tree, so a callback can tell the causes apart.

Catch ``OpenAIBatchError`` for all of them, or one kind for its cause. A ``(core.*)`` kind is
defined in that module, which must not import Airflow; the ``core.errors`` ones are importable
from here too (the others are not, to keep this module light for the triggerer)::

    OpenAIBatchError                (core.errors) the base of every kind below
    +-- OpenAIBatchInputError       (core.errors) also a ValueError: the input is wrong, nothing uploaded
    |   +-- BatchInputError         (core.validate.validation) request lines failed validation; .report
    |   +-- BudgetExceededError     (core.costs) the cost estimate is over max_cost_usd
    |   +-- RecordError             (core.build.requests) a record cannot become a request
    |   +-- SchemaError             (core.validate.structured) a response schema Structured Outputs refuses
    |   +-- TemplateSyntaxError     (core.build.templating) a prompt template does not parse
    |   +-- UnknownModelPriceError  (core.costs) no price for the model, so no estimate
    +-- HandoffError                (core.handoffs) also a ValueError: an XCom record this release cannot read
    +-- ReconcileError              (core.errors) also a RuntimeError: rows and requests would not match 1:1
    +-- CacheError                  (core.cache.store) also a RuntimeError: the answer cache cannot be read or written
    +-- BatchFailedError            also an AirflowException: OpenAI failed the batch, or kept refusing it
    +-- BatchIncompleteError        also an AirflowException: ended expired or cancelled; all answers required
    +-- BatchTimeoutError           also an AirflowException: wait_timeout (or the deferral timeout) ran out
    +-- BatchLostError              also an AirflowException: status reads kept failing, or an unknown event
    +-- DeliveryError               also an AirflowException: a destination did not take the rows

Each carries what it is about, when there is one — ``batch_id`` and/or ``path`` (a file, or a
destination for ``DeliveryError``) — and its message names it too, so a log line alone is enough.

Why some are ``AirflowException`` and some not: the kinds the operators and the sensor raise
replace what were mostly bare ``AirflowException`` raises, and stay one, so Airflow treats them as
it did — its task runner retries them like any exception (only ``AirflowFailException`` and
``AirflowSensorTimeout`` skip the retries, and none of these is one), a deferrable sensor's
``soft_fail`` / ``never_fail`` still turns them into a skip, and an ``except AirflowException``
in a callback still catches them. The ``core`` kinds cannot be one (the core imports nothing from
Airflow) and never were: input errors are ``ValueError``, a reconcile mismatch ``RuntimeError``.
Retrying is harmless where it cannot help: a retried submit re-attaches to its failed batch
instead of paying again.

Left outside the tree on purpose: argument errors found when the DAG is parsed (``ValueError``,
``TypeError``), a connection whose extra is malformed (``ValueError``), the sensor's own timeout
(Airflow's ``AirflowSensorTimeout``: it fails without retry and leaves the batch alone), and an
``openai`` error that outlived the provider's retry policy.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_openai_batch.core.errors import OpenAIBatchError, OpenAIBatchInputError, ReconcileError

__all__ = [
    "BatchFailedError",
    "BatchIncompleteError",
    "BatchLostError",
    "BatchTimeoutError",
    "DeliveryError",
    "OpenAIBatchError",
    "OpenAIBatchInputError",
    "ReconcileError",
]


class BatchFailedError(OpenAIBatchError, AirflowException):
    """OpenAI ended the batch ``failed`` (its errors are in the message), or refused it past the resubmits."""


class BatchIncompleteError(OpenAIBatchError, AirflowException):
    """The batch ended ``expired`` or ``cancelled`` (``status``) and the task was told not to accept part of it."""

    def __init__(
        self, message: str, *, batch_id: str | None = None, path: str | None = None, status: str | None = None
    ) -> None:
        super().__init__(message, batch_id=batch_id, path=path)
        self.status = status


class BatchTimeoutError(OpenAIBatchError, AirflowException):
    """The wait ran out before the batch ended; the batch was cancelled, its finished answers kept."""


class BatchLostError(OpenAIBatchError, AirflowException):
    """What became of the batch is unknown: status reads kept failing, an event was not ours, state was lost."""


class DeliveryError(OpenAIBatchError, AirflowException):
    """A destination did not take the rows; ``path`` says which, ``job_id`` whose rows they were."""

    def __init__(
        self, message: str, *, batch_id: str | None = None, path: str | None = None, job_id: str | None = None
    ) -> None:
        super().__init__(message, batch_id=batch_id, path=path)
        self.job_id = job_id
