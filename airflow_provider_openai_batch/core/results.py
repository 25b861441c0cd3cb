"""Reconcile a batch's output and error lines with its requests: one row per request, by custom_id.

Output lines arrive in any order and are split over two files; some requests may appear in
neither (expired or cancelled batches). Rows are produced while the lines stream in; only the
shard's custom ids are held (a shard is bounded by the per-file limit, not by the job size).
Success is decided by ``response.status_code``, never by the ``error`` field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import msgspec

from airflow_provider_openai_batch.core.costs import PriceTable
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import BATCH_CANCELLED, BATCH_EXPIRED

ResultStatus = Literal["succeeded", "failed", "invalid_output", "expired", "cancelled", "missing"]
RESULT_STATUSES: tuple[ResultStatus, ...] = (
    "succeeded",
    "failed",
    "invalid_output",
    "expired",
    "cancelled",
    "missing",
)


class _Response(msgspec.Struct):
    status_code: int
    body: msgspec.Raw = msgspec.Raw(b"null")
    request_id: str | None = None


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _OutputLine(msgspec.Struct):
    custom_id: str
    id: str | None = None
    response: _Response | None = None
    error: _Error | None = None


_decode_line = msgspec.json.Decoder(_OutputLine).decode
_decode_any = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class ResultRow:
    """One request's outcome. The schema of every destination (Parquet, JSONL, SQL) follows it."""

    job_id: str
    shard: int
    batch_id: str
    custom_id: str
    record_key: str
    status: ResultStatus
    attempt: int = 1
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    model: str | None = None
    content: str | None = None
    refusal: str | None = None
    finish_reason: str | None = None
    parsed: Any = None
    embedding: list[float] | None = None
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    request_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileCounts:
    """What a reconciliation saw, including the anomalies that must be reported, not dropped."""

    by_status: Counter[str] = field(default_factory=Counter)
    duplicate_lines: int = 0
    unknown_custom_ids: int = 0
    unparseable_lines: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(self.by_status.values())

    def add(self, row: ResultRow) -> None:
        self.by_status[row.status] += 1
        self.input_tokens += row.input_tokens
        self.cached_tokens += row.cached_tokens
        self.output_tokens += row.output_tokens
        self.reasoning_tokens += row.reasoning_tokens
        if row.cost_usd is not None:
            self.cost_usd += row.cost_usd
        elif row.input_tokens or row.output_tokens:
            self.unpriced_rows += 1

    def merge(self, other: ReconcileCounts) -> None:
        self.by_status.update(other.by_status)
        for name in (
            "duplicate_lines",
            "unknown_custom_ids",
            "unparseable_lines",
            "input_tokens",
            "cached_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
            "unpriced_rows",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.rows,
            **{status: self.by_status.get(status, 0) for status in RESULT_STATUSES},
            "duplicate_lines": self.duplicate_lines,
            "unknown_custom_ids": self.unknown_custom_ids,
            "unparseable_lines": self.unparseable_lines,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "unpriced_rows": self.unpriced_rows,
        }


@dataclass(frozen=True)
class BatchOutcome:
    """What reconciliation needs to know about the batch a shard ran in."""

    job_id: str
    shard: int
    batch_id: str
    status: str
    attempt: int = 1
    expect_json: bool = False


class Reconciler:
    """
    Joins one shard's requests with its batch's output and error lines.

    Requests never answered become ``expired`` or ``cancelled`` rows when the batch ended that
    way, otherwise ``missing`` — so the row count always equals the request count.
    """

    def __init__(self, outcome: BatchOutcome, custom_ids: Iterable[str], prices: PriceTable | None = None) -> None:
        self.outcome = outcome
        self.prices = prices
        self.pending: set[str] = set(custom_ids)
        self.done: set[str] = set()
        self.counts = ReconcileCounts()

    def rows(self, *line_sources: Iterable[bytes]) -> Iterator[ResultRow]:
        for lines in line_sources:
            for raw in lines:
                if raw.strip():
                    row = self._row_from_line(raw)
                    if row is not None:
                        self.counts.add(row)
                        yield row
        for custom_id in sorted(self.pending):
            row = self._unanswered(custom_id)
            self.counts.add(row)
            yield row
        self.pending.clear()

    def _row_from_line(self, raw: bytes) -> ResultRow | None:
        try:
            line = _decode_line(raw)
        except msgspec.DecodeError:
            self.counts.unparseable_lines += 1
            return None
        cid = line.custom_id
        if cid not in self.pending:
            if cid in self.done:
                self.counts.duplicate_lines += 1
            else:
                self.counts.unknown_custom_ids += 1
            return None
        self.pending.discard(cid)
        self.done.add(cid)
        return self._row(line)

    def _base(self, custom_id: str, status: ResultStatus, **values: Any) -> ResultRow:
        o = self.outcome
        return ResultRow(
            job_id=o.job_id,
            shard=o.shard,
            batch_id=o.batch_id,
            custom_id=custom_id,
            record_key=custom_id,
            status=status,
            attempt=o.attempt,
            **values,
        )

    def _unanswered(self, custom_id: str) -> ResultRow:
        status: ResultStatus = {"expired": "expired", "cancelled": "cancelled"}.get(self.outcome.status, "missing")  # type: ignore[assignment]
        return self._base(custom_id, status, error_code=f"batch_{status}" if status != "missing" else None)

    def _row(self, line: _OutputLine) -> ResultRow:
        response = line.response
        if response is None:
            code = line.error.code if line.error else None
            message = line.error.message if line.error else None
            status: ResultStatus = {BATCH_EXPIRED: "expired", BATCH_CANCELLED: "cancelled"}.get(code or "", "failed")  # type: ignore[assignment]
            return self._base(line.custom_id, status, error_code=code, error_message=message)
        try:
            body = _decode_any(response.body)
        except msgspec.DecodeError:
            body = None
        if not isinstance(body, dict):
            body = {}
        values: dict[str, Any] = {
            "http_status": response.status_code,
            "request_id": response.request_id,
            **_usage(body),
        }
        if not 200 <= response.status_code < 300:
            error = body.get("error")
            if not isinstance(error, dict):
                error = {}
            return self._base(
                line.custom_id,
                "failed",
                error_code=error.get("code") or error.get("type"),
                error_message=error.get("message"),
                model=body.get("model"),
                **values,
            )
        values["cost_usd"] = self._cost(body.get("model"), values)
        extracted = _extract(body)
        status = "succeeded"
        if self.outcome.expect_json and extracted.get("content") is not None:
            try:
                extracted["parsed"] = _decode_any(extracted["content"])
            except msgspec.DecodeError as err:
                status = "invalid_output"
                values["error_code"] = "invalid_json"
                values["error_message"] = str(err)
        return self._base(line.custom_id, status, model=body.get("model"), **extracted, **values)

    def _cost(self, model: Any, usage: dict[str, Any]) -> float | None:
        """Actual cost from reported usage; ``None`` (counted as unpriced) when the model has no price."""
        if self.prices is None or not isinstance(model, str):
            return None
        try:
            return self.prices.cost(
                model, usage.get("input_tokens", 0), usage.get("output_tokens", 0), usage.get("cached_tokens", 0)
            )
        except OpenAIBatchInputError:
            return None


def _usage(body: dict[str, Any]) -> dict[str, int]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return {}
    input_details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": int(usage.get("input_tokens", usage.get("prompt_tokens")) or 0),
        "cached_tokens": int(input_details.get("cached_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens", usage.get("completion_tokens")) or 0),
        "reasoning_tokens": int(output_details.get("reasoning_tokens") or 0),
    }


def _extract(body: dict[str, Any]) -> dict[str, Any]:
    """The answer itself, by the shape of the body (chat, responses, completions, embeddings, moderations)."""
    obj = body.get("object")
    if obj == "chat.completion":
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        return {
            "content": message.get("content"),
            "refusal": message.get("refusal"),
            "finish_reason": choice.get("finish_reason"),
        }
    if obj == "response":
        return _extract_response(body)
    if obj == "text_completion":
        choice = (body.get("choices") or [{}])[0]
        return {"content": choice.get("text"), "finish_reason": choice.get("finish_reason")}
    if obj == "list" and body.get("data") and isinstance(body["data"][0], dict):
        embedding = body["data"][0].get("embedding")
        return {"embedding": embedding if isinstance(embedding, list) else None}
    if "results" in body:
        return {"parsed": body.get("results")}
    return {}


def _extract_response(body: dict[str, Any]) -> dict[str, Any]:
    texts: list[str] = []
    refusal = None
    for item in body.get("output") or []:
        for part in (item or {}).get("content") or []:
            if part.get("type") == "output_text":
                texts.append(part.get("text") or "")
            elif part.get("type") == "refusal":
                refusal = part.get("refusal")
    incomplete = body.get("incomplete_details") or {}
    return {
        "content": "".join(texts) if texts else None,
        "refusal": refusal,
        "finish_reason": incomplete.get("reason") or body.get("status"),
    }
