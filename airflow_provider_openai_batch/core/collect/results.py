"""Reconcile a batch's output and error lines with its requests: one row per request, by custom_id.

Output lines arrive in any order and are split over two files; some requests may appear in
neither (expired or cancelled batches). Rows are produced while the lines stream in; only the
shard's custom ids are held (a shard is bounded by the per-file limit, not by the job size).
Success is decided by ``response.status_code``, never by the ``error`` field. Lines that repeat a
custom id, name one the shard never sent, or cannot be read are counted (and reported by the
caller), never written twice, dropped silently or made fatal; the row count always equals the
request count, and :class:`ReconcileError` is raised if it somehow would not.

Lines are decoded straight into typed structs for the bodies the Batch endpoints return (chat,
responses, completions, embeddings, moderations), which is as fast as a bare ``json.loads``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import itemgetter
from typing import Any, Self

import msgspec

from airflow_provider_openai_batch.core.collect.result_columns import (
    RESULT_STATUSES,
    TOKEN_FIELDS,
    VALUE_FIELDS,
    ResultStatus,
)
from airflow_provider_openai_batch.core.collect.result_lines import (
    NO_BODY,
    Line,
    LineError,
    LooseLine,
    answered_at,
    decode_json,
    decode_line,
    decode_lines,
    decode_loose,
    extract,
    text,
    tokens,
)
from airflow_provider_openai_batch.core.costs import PriceTable, UsageCost
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError, ReconcileError
from airflow_provider_openai_batch.core.limits import BATCH_CANCELLED, BATCH_EXPIRED
from airflow_provider_openai_batch.core.line_blocks import line_lists

# An output line the service (or a proxy) mangled: bad JSON, bad UTF-8, nesting past the decoder's
# recursion. Counted as unparseable, never fatal.
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


@dataclass
class ResultTotals:
    """
    Rows by status, reported tokens and their cost: the totals every summary reports.

    Counted in one way only, column-wise over record batches (``result_table.count_batch``): as
    a reconciliation makes its rows, and over the final rows at delivery.
    """

    by_status: Counter[str] = field(default_factory=Counter)
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    unpriced_rows: int = 0

    @property
    def rows(self) -> int:
        return sum(self.by_status.values())

    def _summed(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "by_status"]

    def merge(self, other: ResultTotals) -> None:
        """Add ``other``'s figures (only the totals, when ``other`` has no anomaly counts)."""
        self.by_status.update(other.by_status)
        for name in other._summed():
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.rows,
            **{status: self.by_status.get(status, 0) for status in RESULT_STATUSES},
            **{name: getattr(self, name) for name in self._summed()},
            "cost_usd": round(self.cost_usd, 6),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The inverse of :meth:`to_dict`, so counts survive a deferral as plain JSON."""
        totals = cls(by_status=Counter({s: int(data.get(s, 0)) for s in RESULT_STATUSES if data.get(s)}))
        for name in totals._summed():
            setattr(totals, name, type(getattr(totals, name))(data.get(name, 0)))
        return totals


@dataclass
class ReconcileCounts(ResultTotals):
    """What a reconciliation saw: the totals, and the anomalies that must be reported, not dropped."""

    duplicate_lines: int = 0
    unknown_custom_ids: int = 0
    unparseable_lines: int = 0

    ANOMALIES = ("duplicate_lines", "unknown_custom_ids", "unparseable_lines")

    @property
    def anomalies(self) -> int:
        return self.duplicate_lines + self.unknown_custom_ids + self.unparseable_lines


@dataclass(frozen=True)
class BatchOutcome:
    """What reconciliation needs to know about the batch a shard ran in."""

    job_id: str
    shard: int
    batch_id: str
    status: str
    attempt: int = 1
    expect_json: bool = False
    created_at: int | None = None
    ended_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None


# The varying part of a row: one value per ``VALUE_FIELDS`` name, in that order (the batch's own
# fields are added column-wise: ``batch_values``).
Values = tuple[Any, ...]
Columns = list[Sequence[Any]]  # the same for a chunk of rows, a column per name
TokenColumn = Sequence[int]  # one count per row
_STATUS = VALUE_FIELDS.index("status")
_USAGE = itemgetter(*map(VALUE_FIELDS.index, (*TOKEN_FIELDS, "cost_usd")))


class Reconciler:
    """
    Joins one shard's requests with its batch's output and error lines.

    Requests never answered become ``expired`` or ``cancelled`` rows when the batch ended that
    way, ``failed`` rows (with the batch's error) when the service refused the file, otherwise
    ``missing`` — so the row count always equals the request count.

    Read it with :meth:`rows` (full rows), :meth:`values` (the varying part of each row) or
    :meth:`value_columns` (the same values a chunk of lines at a time, column by column: the
    fast path for tables). Each reconciler reads its lines once.

    :param outcome: the batch the requests ran in.
    :param custom_ids: the shard's custom ids, in file order.
    :param prices: turns reported usage into ``cost_usd`` (``None``: no cost).
    :param origins: for a retry shard, which input shard each run of ids came from, as
        ``(shard index, count)`` pairs in file order; by default every id is ``outcome.shard``'s.
    :param collected_at: the rows' ``collected_at`` (default: now), so the reconcilers of one
        shard's line ranges stamp the same.
    """

    def __init__(
        self,
        outcome: BatchOutcome,
        custom_ids: Iterable[str],
        prices: PriceTable | None = None,
        origins: Sequence[Sequence[int]] | None = None,
        collected_at: int | None = None,
    ) -> None:
        self.outcome = outcome
        self.prices = prices
        # The shard's ids (to tell a repeated line from a stranger) and those not answered yet; sets,
        # so a chunk of answers is checked and marked done in C. ``_origin``: each id's input shard,
        # for a retry shard that mixes several (``None``: all are ``outcome.shard``'s).
        self.sent, self._origin = _index_ids(custom_ids, origins)
        self.pending: set[str] = set(self.sent)
        self.expected = len(self.sent)
        # Anomalies as lines are read; the totals as the rows become record batches
        # (``result_table.count_batch``); ``rows`` for the one-row-per-request check.
        self.counts = ReconcileCounts()
        self.rows = 0
        self.collected_at = int(time.time()) if collected_at is None else collected_at
        self._costs_of: dict[str | None, UsageCost | None] = {None: None}  # by model; None: unpriced

    def batch_values(self) -> dict[str, Any]:
        """The ``BATCH_FIELDS`` columns: the same for every row of this reconciliation."""
        o = self.outcome
        return {
            "job_id": o.job_id,
            "batch_id": o.batch_id,
            "attempt": o.attempt,
            "batch_created_at": o.created_at,
            "batch_ended_at": o.ended_at,
            "collected_at": self.collected_at,
            "cached": False,
        }

    def values(self, *line_sources: Iterable[bytes]) -> Iterator[Values]:
        """The varying part of each row (``VALUE_FIELDS``), one tuple per request, streamed."""
        for lines in line_sources:
            for raw in lines:
                values = self._line_values(raw)
                if values is not None:
                    yield values
        yield from self._unanswered_values()

    def value_columns(
        self, *line_sources: Iterable[bytes], chunk: int = 64, unanswered: bool = True
    ) -> Iterator[Columns]:
        """
        The same values as :meth:`values`, a column list per ``VALUE_FIELDS`` for each chunk of lines.

        A chunk of plain successful chat answers — nearly all of a large job — is turned into
        columns by one comprehension per field instead of per-line code, which keeps
        reconciliation close to the cost of decoding; any other chunk goes line by line.
        ``unanswered=False`` stops after the lines: a reconciler of one range of a shard's lines
        cannot know which requests the other ranges answer.
        """
        for lines in line_sources:
            for raws in line_lists(lines, chunk):
                columns = self._chat_columns(raws)
                if columns is None:
                    columns = _transpose([v for v in map(self._line_values, raws) if v is not None])
                if columns:
                    yield columns
        if not unanswered:
            return
        columns = _transpose(list(self._unanswered_values()))
        if columns:
            yield columns

    # -- line by line ---------------------------------------------------------------------------

    def _line_values(self, raw: bytes) -> Values | None:
        try:
            line: Line | LooseLine | None = decode_line(raw)
        except _UNREADABLE:
            line = self._loose(raw)
            if line is None:
                return None
        assert line is not None
        if line.custom_id not in self.pending:
            self._stray(line.custom_id)
            return None
        self.pending.remove(line.custom_id)
        shard = self._shard_of(line.custom_id)
        values = self._answer(line, shard) if isinstance(line, Line) else self._loose_answer(line, shard)
        self.rows += 1
        return values

    def _unanswered_values(self) -> Iterator[Values]:
        """Rows for requests without a line, in custom_id order; then check the totals."""
        for custom_id in sorted(self.pending):
            values = self._unanswered(custom_id, self._shard_of(custom_id))
            self.rows += 1
            yield values
        self.pending.clear()
        if self.rows != self.expected:
            raise ReconcileError(
                f"batch {self.outcome.batch_id}: {self.rows} rows for {self.expected} requests of shard "
                f"{self.outcome.shard}; reconciliation must give exactly one row per request",
                batch_id=self.outcome.batch_id,
            )

    def _loose(self, raw: bytes) -> LooseLine | None:
        """Read a line whose body has an unknown shape; ``None`` (counted) for a line that is not one."""
        if not raw.strip():
            return None
        try:
            return decode_loose(raw)
        except _UNREADABLE:
            self.counts.unparseable_lines += 1
            return None

    def _stray(self, custom_id: str) -> None:
        if custom_id in self.sent:
            self.counts.duplicate_lines += 1
        else:
            self.counts.unknown_custom_ids += 1

    def _unanswered(self, custom_id: str, shard: int) -> Values:
        batch_status = self.outcome.status
        if batch_status in ("expired", "cancelled"):
            return _values(custom_id, shard, batch_status, error_code=f"batch_{batch_status}")
        if batch_status == "failed":  # the service refused the whole file: every request failed with it
            o = self.outcome
            return _values(custom_id, shard, "failed", error_code=o.error_code, error_message=o.error_message)
        message = f"batch {self.outcome.batch_id} ended {batch_status} without a line for this request"
        return _values(custom_id, shard, "missing", error_message=message)

    def _answer(self, line: Line, shard: int) -> Values:
        response = line.response
        if response is None:
            return _request_error(line.custom_id, shard, line.error)
        body = response.body or NO_BODY
        input_tokens, cached, output_tokens, reasoning = tokens(body.usage)
        cost = self._cost(body.model, input_tokens, cached, output_tokens) if input_tokens or output_tokens else None
        status: ResultStatus = "succeeded"
        error_code = error_message = None
        content = refusal = finish_reason = parsed = embedding = None
        if not 200 <= response.status_code < 300:
            status = "failed"
            if body.error is not None:
                error_code = text(body.error.code) or body.error.type
                error_message = body.error.message
        else:
            content, refusal, finish_reason, parsed, embedding = extract(body)
            if self.outcome.expect_json and content is not None:
                try:
                    parsed = decode_json(content)
                except (msgspec.DecodeError, RecursionError) as err:
                    status, error_code = "invalid_output", "invalid_json"
                    error_message = f"the answer is not the JSON asked for: {err}"
        return (  # in VALUE_FIELDS order
            shard, line.custom_id, status, response.status_code, error_code, error_message, body.model,
            content, refusal, finish_reason, parsed, embedding, input_tokens, cached, output_tokens, reasoning,
            cost, response.request_id, answered_at(body),
        )  # fmt: skip

    def _loose_answer(self, line: LooseLine, shard: int) -> Values:
        """A line whose body is not a shape we know: keep the status code and the raw text."""
        if line.response is None:
            error = line.error if isinstance(line.error, dict) else {}
            known = LineError(code=text(error.get("code")), message=text(error.get("message")))
            return _request_error(line.custom_id, shard, known)
        response = line.response
        return _values(
            line.custom_id,
            shard,
            "failed" if not 200 <= response.status_code < 300 else "invalid_output",
            http_status=response.status_code,
            request_id=text(response.request_id),
            content=bytes(response.body).decode("utf-8", "replace"),
            error_code="unreadable_body",
            error_message="the response body does not have the shape of this endpoint's answers; raw body kept",
        )

    def _cost(self, model: str | None, input_tokens: int, cached: int, output_tokens: int) -> float | None:
        """Actual cost from reported usage; ``None`` (counted as unpriced) when the model has no price."""
        cost = self._costs_of[model] if model in self._costs_of else self._cost_of(model)
        return None if cost is None else cost(input_tokens, cached, output_tokens)

    def _cost_of(self, model: str | None) -> UsageCost | None:
        """A model's price, looked up once."""
        cost = None if self.prices is None or model is None else _usage_cost(self.prices, model)
        self._costs_of[model] = cost
        return cost

    # -- a chunk at a time ------------------------------------------------------------------------

    def _chat_columns(self, raws: list[bytes]) -> Columns | None:
        """
        Columns for a chunk whose lines are all successful chat answers with known custom ids.

        ``None`` — before anything is counted or marked done — when any line is something else
        (an error, another endpoint's body, a duplicate, bad JSON…): the chunk then goes line by line.
        """
        try:
            lines = decode_lines(b"[" + b",".join(raws) + b"]")  # one call for the chunk
            if len(lines) != len(raws):  # a "line" holding two objects is not one answer
                return None
            responses = [line.response for line in lines]
            codes = [response.status_code for response in responses]  # type: ignore[union-attr]
            if min(codes) < 200 or max(codes) >= 300:
                return None
            bodies = [response.body for response in responses]  # type: ignore[union-attr]
            choices = [body.choices[0] for body in bodies]  # type: ignore[union-attr,index]
            messages = [choice.message for choice in choices]
            contents = [message.content for message in messages]  # type: ignore[union-attr]
        except (msgspec.DecodeError, AttributeError, TypeError, IndexError, ValueError, RecursionError):
            return None
        if not _TEXT_TYPES.issuperset(map(type, contents)):
            return None
        count = len(lines)
        parsed: list[Any] = [None] * count
        if self.outcome.expect_json:
            try:
                parsed = [None if content is None else decode_json(content) for content in contents]
            except (msgspec.DecodeError, RecursionError):
                return None
        custom_ids = [line.custom_id for line in lines]
        shards = self._take(custom_ids)
        if shards is None:
            return None
        inputs, cached, outputs, reasoning = zip(*map(tokens, [body.usage for body in bodies]), strict=True)  # type: ignore[union-attr]
        models = [body.model for body in bodies]  # type: ignore[union-attr]
        costs = self._costs(models, inputs, cached, outputs)
        self.rows += count
        nothing = [None] * count
        return [  # in VALUE_FIELDS order
            shards, custom_ids, ["succeeded"] * count, codes, nothing, nothing, models, contents,
            [message.refusal for message in messages],  # type: ignore[union-attr]
            [choice.finish_reason for choice in choices], parsed, nothing, inputs, cached, outputs, reasoning, costs,
            [response.request_id for response in responses],  # type: ignore[union-attr]
            [body.created if body.created is not None else answered_at(body) for body in bodies],  # type: ignore[union-attr,arg-type]
        ]  # fmt: skip

    def _shard_of(self, custom_id: str) -> int:
        return self.outcome.shard if self._origin is None else self._origin[custom_id]

    def _take(self, custom_ids: list[str]) -> list[int] | None:
        """Mark a chunk's ids answered; ``None`` (nothing changed) if any is unknown or repeated."""
        chunk = set(custom_ids)
        if len(chunk) != len(custom_ids) or not chunk <= self.pending:
            return None
        self.pending -= chunk
        if self._origin is None:
            return [self.outcome.shard] * len(custom_ids)
        return list(map(self._origin.__getitem__, custom_ids))

    def _costs(
        self, models: list[str | None], inputs: TokenColumn, cached: TokenColumn, outputs: TokenColumn
    ) -> list[Any]:
        columns = zip(inputs, cached, outputs, strict=True)
        if len(set(models)) == 1:
            model = models[0]
            cost = self._costs_of[model] if model in self._costs_of else self._cost_of(model)
            if cost is None:
                return [None] * len(models)
            return [cost(i, k, o) if i or o else None for i, k, o in columns]
        return [self._cost(m, i, k, o) if i or o else None for m, (i, k, o) in zip(models, columns, strict=True)]


_TEXT_TYPES = frozenset((str, type(None)))
_DEFAULT_VALUES = dict.fromkeys(VALUE_FIELDS) | dict.fromkeys(TOKEN_FIELDS, 0)


def _values(custom_id: str, shard: int, status: str, **given: Any) -> Values:
    """A values tuple for the rare rows (errors, unanswered), built by name."""
    merged = {**_DEFAULT_VALUES, **given, "custom_id": custom_id, "shard": shard, "status": status}
    return tuple(merged[name] for name in VALUE_FIELDS)


def _request_error(custom_id: str, shard: int, error: LineError | None) -> Values:
    """A line with no response: the service did not run the request (expiry, cancel, timeout…)."""
    code = error.code if error else None
    status = "expired" if code == BATCH_EXPIRED else "cancelled" if code == BATCH_CANCELLED else "failed"
    return _values(custom_id, shard, status, error_code=code, error_message=error.message if error else None)


def _transpose(rows: list[Values]) -> Columns:
    return [list(column) for column in zip(*rows, strict=True)] if rows else []


def _index_ids(
    custom_ids: Iterable[str], origins: Sequence[Sequence[int]] | None
) -> tuple[frozenset[str], dict[str, int] | None]:
    """The shard's ids, and each one's input shard for a retry shard; a shard repeating an id is refused."""
    ids = list(custom_ids)
    unique = frozenset(ids)
    if len(unique) != len(ids):
        seen: set[str] = set()
        for position, custom_id in enumerate(ids, start=1):
            if custom_id in seen:
                raise ReconcileError(f"request #{position}: custom_id {custom_id!r} appears twice in the shard")
            seen.add(custom_id)
    if origins is None:
        return unique, None
    shard_of: dict[str, int] = {}
    runs = iter(origins)
    shard, left = -1, 0
    for position, custom_id in enumerate(ids, start=1):
        while left <= 0:
            try:
                shard, left = next(runs)
            except StopIteration:
                raise ReconcileError(f"request #{position} ({custom_id!r}) is beyond the shard origins given") from None
        left -= 1
        shard_of[custom_id] = shard
    return unique, shard_of


def _usage_cost(prices: PriceTable, model: str) -> UsageCost | None:
    try:
        return prices.price(model).usage_cost()
    except OpenAIBatchInputError:
        return None
