"""Find-or-create one shard's batch: the idempotent step shared by the submit operator and retries.

A shard's batch is tagged with an idempotency key made of its job id and the sha256 of its file.
Looking that key up before creating anything means a retry, a cleared task or a crashed worker
finds the batch it already paid for instead of billing a second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai.types import Batch

    from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook

# Look for an earlier batch of the same shard among batches created this long ago at most.
REATTACH_LOOKBACK = timedelta(days=3)

IDEMPOTENCY_KEY = "idempotency_key"

_LOG = logging.getLogger(__name__)


def idempotency_key(shard: Mapping[str, Any]) -> str:
    """Stable across retries and reruns of the same shard; changes with ``job_id`` or the file's bytes."""
    return f"{shard['job_id']}:{str(shard['sha256'])[:32]}"


def submit_shard(
    hook: OpenAIBatchHook,
    shard: Mapping[str, Any],
    metadata: Mapping[str, str],
    *,
    reattach: bool = True,
    output_expires_after: int | None = None,
    log: Any = None,
) -> Batch:
    """
    Return the shard's batch: the one already created under its idempotency key, else a new one.

    :param hook: the hook to call the API with.
    :param shard: one shard of the build manifest (``path``, ``endpoint``, ``job_id``, ``sha256``…).
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
        found = find_existing(hook, key)
        if found is not None:
            log.info("Re-attaching to batch %s (%s) created earlier for this shard", found.id, found.status)
            return found
    return create(hook, shard, metadata, output_expires_after=output_expires_after, log=log)


def attempt_key(shard: Mapping[str, Any], attempt: int) -> str:
    """The key of the ``attempt``-th resubmission of a shard (0: the first submission)."""
    base = idempotency_key(shard)
    return base if attempt == 0 else f"{base}:resubmit{attempt}"


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
    key = metadata[IDEMPOTENCY_KEY]
    found = find_existing(hook, key)
    if found is not None:
        log.info("Re-attaching to batch %s (%s) already resubmitted as %s", found.id, found.status, key)
        return found
    batch = hook.create_batch(
        input_file_id=previous.input_file_id,
        endpoint=previous.endpoint,
        metadata=metadata,
        output_expires_after_seconds=output_expires_after,
    )
    log.info("Resubmitted the file of batch %s as batch %s", previous.id, batch.id)
    return batch


def find_existing(hook: OpenAIBatchHook, key: str) -> Batch | None:
    """The newest batch tagged with ``key`` among those created within ``REATTACH_LOOKBACK``."""
    created_after = time.time() - REATTACH_LOOKBACK.total_seconds()
    return hook.find_batch({IDEMPOTENCY_KEY: key}, created_after=created_after)


def create(
    hook: OpenAIBatchHook,
    shard: Mapping[str, Any],
    metadata: Mapping[str, str],
    *,
    output_expires_after: int | None = None,
    log: Any = None,
) -> Batch:
    """Upload the shard's file (streamed) and create its batch, whatever exists already."""
    log = log or _LOG
    path = shard["path"]
    uploaded = hook.upload_file(path)
    log.info("Uploaded %s as %s (%s requests, %d bytes)", path, uploaded.id, shard.get("requests"), uploaded.bytes)
    batch = hook.create_batch(
        input_file_id=uploaded.id,
        endpoint=shard["endpoint"],
        metadata=metadata,
        output_expires_after_seconds=output_expires_after,
    )
    log.info("Created batch %s for shard %s of job %s", batch.id, shard.get("index"), shard.get("job_id"))
    return batch
