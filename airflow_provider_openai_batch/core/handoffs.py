"""What one task hands the next: typed records, turned into plain JSON only at the XCom and defer boundary.

    build ── ShardRef ──▶ submit ── Submitted(ShardRef, BatchRef) ──▶ results
                                                                      │  CollectionState across its
                                                                      ▼  deferrals (retry batches)

Each record carries ``version``. A record written by a newer release of the provider (a component
upgraded before another) is refused with a message saying so, instead of being half-read; one
written before versions existed has the same fields and is read as version 1. Unknown keys are
ignored, so a later version may add optional fields without breaking an older reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchError
from airflow_provider_openai_batch.core.shards import Shard

HANDOFF_VERSION = 1

H = TypeVar("H", bound="Versioned")


class HandoffError(OpenAIBatchError, ValueError):
    """A value from XCom or a deferral that is not the record it should be."""


class Versioned:
    """The boundary of a versioned record: ``to_json`` on the way out, ``from_json`` on the way in.

    A mixin without fields, so a record can also be another struct (``ShardRef`` is a ``Shard``);
    each record declares ``version`` itself, through :class:`Handoff` or beside its other base.
    """

    __slots__ = ()
    what: ClassVar[str] = "record"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, as XCom and trigger kwargs store them."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return data

    @classmethod
    def from_json(cls: type[H], value: Any) -> H:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise HandoffError(f"expected {cls.what} (a mapping), got {type(value).__name__}")
        version = value.get("version", 1)
        if not isinstance(version, int) or version > HANDOFF_VERSION:
            raise HandoffError(
                f"{cls.what} has version {version!r}, newer than this provider reads ({HANDOFF_VERSION}): it was "
                "written by a newer release of airflow-provider-openai-batch; install the same release on every "
                "Airflow component, or clear the upstream task to write it again"
            )
        try:
            return msgspec.convert(dict(value), cls, strict=False)
        except msgspec.ValidationError as err:
            raise HandoffError(
                f"{cls.what} is not readable ({err}); clear the upstream task to write it again"
            ) from None


class Handoff(msgspec.Struct, Versioned, kw_only=True):
    """A record that is nothing else: the version field and the boundary."""

    version: int = HANDOFF_VERSION


class ShardRef(Shard, Versioned, kw_only=True, frozen=True):
    """
    One request file, as the build task hands it to a submit task (and the results task's retries):
    the :class:`Shard` and the job's fields.

    ``sha256`` keys re-attachment; ``attempt`` > 1 and ``origins`` mark a results retry shard
    (``origins``: runs of ``[input shard, count]`` in the file's line order).
    """

    what: ClassVar[str] = "a shard"

    version: int = HANDOFF_VERSION
    job_id: str
    endpoint: str
    model: str | None = None
    manifest: str | None = None
    expect_json: bool = False
    attempt: int = 1
    origins: list[list[int]] | None = None


class RequestCounts(msgspec.Struct, kw_only=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchRef(Handoff):
    """The fields of a Batch later steps use: ids, status, counts, usage and its first errors."""

    what: ClassVar[str] = "a batch"

    id: str
    status: str
    endpoint: str | None = None
    model: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    completed_at: int | None = None
    request_counts: RequestCounts | None = None
    usage: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] = msgspec.field(default_factory=list)
    errors_total: int = 0

    @property
    def file_ids(self) -> list[str]:
        """The output and error files, those that exist."""
        return [fid for fid in (self.output_file_id, self.error_file_id) if fid]

    @property
    def first_error(self) -> dict[str, Any]:
        return self.errors[0] if self.errors else {}


class Submitted(Handoff):
    """What a submit task returns: its shard and the batch that answered it."""

    what: ClassVar[str] = "a submitted shard"

    shard: ShardRef
    batch: BatchRef


class CollectionState(Handoff):
    """
    The results task's progress, kept across its deferrals on retry batches.

    ``items`` are the current attempt's shards and batches; ``staged`` and ``retried`` count rows
    staged and requests resubmitted per attempt (keys are attempt numbers as strings, as JSON has
    them); ``deadline`` is the wall-clock end of the current wait, if any.
    """

    what: ClassVar[str] = "the results task's collection state"

    job_id: str
    work_dir: str
    requests: int
    items: list[Submitted]
    attempt: int = 1
    staged: dict[str, int] = msgspec.field(default_factory=dict)
    retried: dict[str, int] = msgspec.field(default_factory=dict)
    batch_ids: list[str] = msgspec.field(default_factory=list)
    anomalies: dict[str, Any] = msgspec.field(default_factory=dict)  # ReconcileCounts.to_dict()
    deadline: float | None = None
