"""The root of the provider's error tree and the kinds the core raises, without Airflow.

The core must import nothing from Airflow (the CLI runs without it), so these live here; the whole
tree, with the kinds raised around Airflow's tasks, is drawn and importable in
:mod:`airflow_provider_openai_batch.exceptions`.
"""

from __future__ import annotations


class OpenAIBatchError(Exception):
    """
    A provider failure, naming the batch and/or path it concerns.

    ``batch_id`` and ``path`` are added to the message when the message does not name them already.
    They are keyword-only, so ``cls(message)`` still works: unpickling (worker processes) relies on it.
    """

    def __init__(self, message: str, *, batch_id: str | None = None, path: str | None = None) -> None:
        self.batch_id = batch_id
        self.path = path
        missing = [
            f"{label} {value}"
            for label, value in (("batch", batch_id), ("path", path))
            if value and value not in message
        ]
        super().__init__(f"{message} ({', '.join(missing)})" if missing else message)


class OpenAIBatchInputError(OpenAIBatchError, ValueError):
    """
    The batch input (records, templates, JSONL, limits or budget) is not acceptable.

    Raised before anything is uploaded or billed. Still a ``ValueError``, so callers can catch
    "the input is wrong" apart from API or infrastructure failures; each message says what is
    wrong, where, and how to fix it.
    """


class ReconcileError(OpenAIBatchError, RuntimeError):
    """The rows would not match the requests one to one: a corrupt shard or a bug, never ignored."""
