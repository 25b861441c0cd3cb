"""Collect finished batches: stream their output and error files, reconcile by custom_id, write rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgspec
from airflow.sdk import BaseOperator, Context

from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.naming import safe_name
from airflow_provider_openai_batch.core.results import BatchOutcome, ReconcileCounts, Reconciler, ResultRow
from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook, as_storage_path
from airflow_provider_openai_batch.operators.storage import iter_lines, write_atomically


class _RequestId(msgspec.Struct):
    custom_id: str


_decode_custom_id = msgspec.json.Decoder(_RequestId).decode
_encode = msgspec.json.Encoder().encode


class OpenAIBatchResultsOperator(BaseOperator):
    """
    Turn finished batches into one result row per request, written to ``{destination}/{job_id}/``.

    Output lines are joined to the shard's requests by ``custom_id`` (never by position); requests
    an expired or cancelled batch never ran are kept as ``expired``/``cancelled`` rows, so the row
    count always equals the request count. The XCom is a summary (counts, tokens, location).

    :param batches: the submit tasks' return values (``submit.output`` of a mapped submit).
    :param destination: a directory (local path or ``ObjectStoragePath`` URI) for the results.
    :param conn_id: the OpenAI connection the batches were created with.
    :param prices: price overrides (a mapping or a JSON file path) on top of the packaged table,
        used to turn each row's reported usage into ``cost_usd``.
    """

    template_fields: Sequence[str] = ("batches", "destination", "prices")

    def __init__(
        self,
        *,
        batches: Iterable[Mapping[str, Any]],
        destination: str,
        conn_id: str = OpenAIBatchHook.default_conn_name,
        prices: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.batches = batches
        self.destination = destination
        self.conn_id = conn_id
        self.prices = prices

    def execute(self, context: Context) -> dict[str, Any]:
        hook = OpenAIBatchHook(conn_id=self.conn_id)
        submitted = sorted(self.batches, key=lambda b: b["shard"]["index"])
        if not submitted:
            raise ValueError("no batches to collect: the upstream submit tasks returned nothing")
        job_id = safe_name(str(submitted[0]["shard"]["job_id"]))
        job_dir = as_storage_path(self.destination) / job_id
        target = job_dir / "results.jsonl"
        counts = ReconcileCounts()
        prices = PriceTable.load(self.prices)
        size = write_atomically(target, _encoded(self._rows(hook, submitted, counts, prices)))
        summary = {
            "job_id": job_id,
            "destination": str(target),
            "bytes": size,
            "batches": [b["batch"]["id"] for b in submitted],
            **counts.to_dict(),
        }
        write_atomically(job_dir / "summary.json", iter([_encode(summary) + b"\n"]))
        self.log.info("Wrote %d result rows to %s: %s", counts.rows, target, _counts_line(summary))
        return summary

    def _rows(
        self,
        hook: OpenAIBatchHook,
        submitted: list[Mapping[str, Any]],
        counts: ReconcileCounts,
        prices: PriceTable,
    ) -> Iterator[ResultRow]:
        for item in submitted:
            shard, batch = item["shard"], item["batch"]
            outcome = BatchOutcome(
                job_id=str(shard["job_id"]),
                shard=int(shard["index"]),
                batch_id=batch["id"],
                status=batch["status"],
                expect_json=bool(shard.get("expect_json")),
            )
            custom_ids = (_decode_custom_id(line).custom_id for line in iter_lines(shard["path"]))
            reconciler = Reconciler(outcome, custom_ids, prices)
            sources = [
                hook.iter_file_lines(fid) for fid in (batch.get("output_file_id"), batch.get("error_file_id")) if fid
            ]
            yield from reconciler.rows(*sources)
            counts.merge(reconciler.counts)
            _warn_anomalies(self.log, batch["id"], reconciler.counts)


def _encoded(rows: Iterable[ResultRow]) -> Iterator[bytes]:
    for row in rows:
        yield _encode(row.to_dict()) + b"\n"


def _counts_line(summary: Mapping[str, Any]) -> str:
    keys = ("requests", "succeeded", "failed", "expired", "cancelled", "missing", "cost_usd")
    return " ".join(f"{k}={summary[k]}" for k in keys)


def _warn_anomalies(log: Any, batch_id: str, counts: ReconcileCounts) -> None:
    if counts.duplicate_lines or counts.unknown_custom_ids or counts.unparseable_lines:
        log.warning(
            "Batch %s output had %d duplicate line(s), %d unknown custom_id(s), %d unparseable line(s); "
            "they were counted and not written",
            batch_id,
            counts.duplicate_lines,
            counts.unknown_custom_ids,
            counts.unparseable_lines,
        )
