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

import base64
import sys
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from airflow_provider_openai_batch.core.costs import TOKENS_PER_PRICE_UNIT, PriceTable
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


class ReconcileError(RuntimeError):
    """The rows would not match the requests one to one: a corrupt shard or a bug, never ignored."""


class ResultRow(msgspec.Struct, frozen=True, gc=False):
    """
    One request's outcome. Every destination (Parquet, JSONL, SQL) has these columns, in this order.

    ``shard`` is the input shard the request was built into (also for retries, which mix shards);
    ``attempt`` is the attempt whose answer this is (1 = the first batch). Timestamps are epoch
    seconds (UTC): when the service answered, when the batch was created and ended, and when the
    row was reconciled. (Not tracked by the garbage collector: rows hold no cycles, and a million
    of them would otherwise make every collection slower.)
    """

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
    responded_at: int | None = None
    batch_created_at: int | None = None
    batch_ended_at: int | None = None
    collected_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


RESULT_FIELDS: tuple[str, ...] = ResultRow.__struct_fields__


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

    ANOMALIES = ("duplicate_lines", "unknown_custom_ids", "unparseable_lines")
    _SUMMED = (*ANOMALIES, "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "cost_usd")

    @property
    def rows(self) -> int:
        return sum(self.by_status.values())

    @property
    def anomalies(self) -> int:
        return self.duplicate_lines + self.unknown_custom_ids + self.unparseable_lines

    def merge(self, other: ReconcileCounts) -> None:
        self.by_status.update(other.by_status)
        for name in (*self._SUMMED, "unpriced_rows"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.rows,
            **{status: self.by_status.get(status, 0) for status in RESULT_STATUSES},
            **{name: getattr(self, name) for name in self._SUMMED if name != "cost_usd"},
            "cost_usd": round(self.cost_usd, 6),
            "unpriced_rows": self.unpriced_rows,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReconcileCounts:
        """The inverse of :meth:`to_dict`, so counts survive a deferral as plain JSON."""
        counts = cls(by_status=Counter({s: int(data.get(s, 0)) for s in RESULT_STATUSES if data.get(s)}))
        for name in (*cls._SUMMED, "unpriced_rows"):
            setattr(counts, name, type(getattr(counts, name))(data.get(name, 0)))
        return counts


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


# -- the output line, typed for the bodies the Batch endpoints return -------------------------


class _Details(msgspec.Struct):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    # chat/completions/embeddings name them prompt/completion; responses name them input/output.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens_details: _Details | None = None
    input_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None
    output_tokens_details: _Details | None = None


class _Message(msgspec.Struct):
    content: Any = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    text: str | None = None
    finish_reason: str | None = None


class _Part(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    refusal: str | None = None


class _Item(msgspec.Struct):
    type: str | None = None
    content: list[_Part] | None = None


class _DataItem(msgspec.Struct):
    embedding: list[float] | str | None = None


class _ApiError(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _Incomplete(msgspec.Struct):
    reason: str | None = None


class _Body(msgspec.Struct):
    object: str | None = None
    model: str | None = None
    created: int | None = None
    created_at: int | float | None = None
    status: str | None = None
    choices: list[_Choice] | None = None
    output: list[_Item] | None = None
    data: list[_DataItem] | None = None
    usage: _Usage | None = None
    error: _ApiError | None = None
    incomplete_details: _Incomplete | None = None
    results: Any = None


_NO_BODY = _Body()


class _Response(msgspec.Struct):
    status_code: int
    request_id: str | None = None
    body: _Body | None = None


class _LineError(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _Line(msgspec.Struct):
    custom_id: str
    response: _Response | None = None
    error: _LineError | None = None


class _LooseResponse(msgspec.Struct):
    status_code: int
    request_id: Any = None
    body: msgspec.Raw = msgspec.Raw(b"null")


class _LooseLine(msgspec.Struct):
    """A line whose body has a shape we do not know: the status code and the raw body still count."""

    custom_id: str
    response: _LooseResponse | None = None
    error: Any = None


_decode_line = msgspec.json.Decoder(_Line).decode
_decode_loose = msgspec.json.Decoder(_LooseLine).decode
_decode_any = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode

_Rates = tuple[float, float, float]


# The values that differ from row to row, in this order; the rest are the batch's (see ``row``).
VALUE_FIELDS: tuple[str, ...] = (
    "custom_id",
    "shard",
    "status",
    "http_status",
    "error_code",
    "error_message",
    "model",
    "content",
    "refusal",
    "finish_reason",
    "parsed",
    "embedding",
    "input_tokens",
    "cached_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "request_id",
    "responded_at",
)
Values = tuple[Any, ...]
assert RESULT_FIELDS[7:23] == VALUE_FIELDS[3:], "ResultRow and VALUE_FIELDS must list http_status..responded_at alike"
_STATUS, _INPUT, _OUTPUT, _COST = map(VALUE_FIELDS.index, ("status", "input_tokens", "output_tokens", "cost_usd"))


class Reconciler:
    """
    Joins one shard's requests with its batch's output and error lines.

    Requests never answered become ``expired`` or ``cancelled`` rows when the batch ended that
    way, ``failed`` rows (with the batch's error) when the service refused the file, otherwise
    ``missing`` — so the row count always equals the request count.

    :param outcome: the batch the requests ran in.
    :param custom_ids: the shard's custom ids, in file order.
    :param prices: turns reported usage into ``cost_usd`` (``None``: no cost).
    :param origins: for a retry shard, which input shard each run of ids came from, as
        ``(shard index, count)`` pairs in file order; by default every id is ``outcome.shard``'s.
    """

    def __init__(
        self,
        outcome: BatchOutcome,
        custom_ids: Iterable[str],
        prices: PriceTable | None = None,
        origins: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.outcome = outcome
        self.prices = prices
        self.pending: dict[str, int] = _index_ids(custom_ids, origins or ((outcome.shard, sys.maxsize),))
        self.expected = len(self.pending)
        self.done: set[str] = set()
        self.counts = ReconcileCounts()
        self.collected_at = int(time.time())
        self._rates: dict[str, _Rates | None] = {}

    def rows(self, *line_sources: Iterable[bytes]) -> Iterator[ResultRow]:
        """Rows for the answered requests as their lines stream in, then for the unanswered ones."""
        return map(self.row, self.values(*line_sources))

    def row(self, values: Values) -> ResultRow:
        """The full row from one ``values`` tuple and the batch's own fields."""
        o = self.outcome
        custom_id, shard, status, *rest = values
        return ResultRow(  # type: ignore[call-arg]  # mypy cannot count the starred middle
            o.job_id, shard, o.batch_id, custom_id, custom_id, status, o.attempt, *rest,
            o.created_at, o.ended_at, self.collected_at,
        )  # fmt: skip

    def values(self, *line_sources: Iterable[bytes]) -> Iterator[Values]:
        """
        The varying part of each row (``VALUE_FIELDS``), streamed: the hot loop of the results path.

        Tuples rather than rows so a million results cost what decoding them costs; table writers
        add the per-batch columns once per record batch.
        """
        pending, done, counts = self.pending, self.done, self.counts
        by_status = counts.by_status
        usage = [0, 0, 0, 0, 0.0, 0]  # input, cached, output, reasoning tokens, cost, unpriced rows
        for lines in line_sources:
            for raw in lines:
                try:
                    line: _Line | _LooseLine | None = _decode_line(raw)
                except msgspec.DecodeError:
                    line = self._loose(raw)
                    if line is None:
                        continue
                assert line is not None
                shard = pending.pop(line.custom_id, None)
                if shard is None:
                    self._stray(line.custom_id)
                    continue
                done.add(line.custom_id)
                values = self._answer(line, shard) if isinstance(line, _Line) else self._loose_answer(line, shard)
                by_status[values[_STATUS]] += 1
                if values[_INPUT] or values[_OUTPUT]:
                    _add_usage(usage, values)
                yield values
        _store_usage(counts, usage)
        for custom_id in sorted(pending):
            values = self._unanswered(custom_id, pending[custom_id])
            by_status[values[_STATUS]] += 1
            yield values
        pending.clear()
        if counts.rows != self.expected:
            raise ReconcileError(
                f"batch {self.outcome.batch_id}: {counts.rows} rows for {self.expected} requests of shard "
                f"{self.outcome.shard}; reconciliation must give exactly one row per request"
            )

    def _loose(self, raw: bytes) -> _LooseLine | None:
        """Read a line whose body has an unknown shape; ``None`` (counted) for a line that is not one."""
        if not raw.strip():
            return None
        try:
            return _decode_loose(raw)
        except msgspec.DecodeError:
            self.counts.unparseable_lines += 1
            return None

    def _stray(self, custom_id: str) -> None:
        if custom_id in self.done:
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

    def _answer(self, line: _Line, shard: int) -> Values:
        response = line.response
        if response is None:
            return _request_error(line.custom_id, shard, line.error)
        body = response.body or _NO_BODY
        model = body.model
        usage = body.usage
        input_tokens = cached = output_tokens = reasoning = 0
        cost = None
        if usage is not None:  # chat/completions/embeddings say prompt/completion; responses say input/output
            input_tokens = (usage.prompt_tokens if usage.input_tokens is None else usage.input_tokens) or 0
            output_tokens = (usage.completion_tokens if usage.output_tokens is None else usage.output_tokens) or 0
            details = usage.prompt_tokens_details or usage.input_tokens_details
            cached = min(details.cached_tokens or 0, input_tokens) if details else 0
            details = usage.completion_tokens_details or usage.output_tokens_details
            reasoning = (details.reasoning_tokens or 0) if details else 0
            rates = self._rates[model] if model in self._rates else self._rates_for(model)
            if rates is not None:
                uncached = input_tokens - cached
                cost = (uncached * rates[0] + cached * rates[1] + output_tokens * rates[2]) / TOKENS_PER_PRICE_UNIT
        status: ResultStatus = "succeeded"
        error_code = error_message = None
        content = refusal = finish_reason = parsed = embedding = None
        if not 200 <= response.status_code < 300:
            status = "failed"
            if body.error is not None:
                error_code = _text(body.error.code) or body.error.type
                error_message = body.error.message
        else:
            content, refusal, finish_reason, parsed, embedding = _extract(body)
            if self.outcome.expect_json and content is not None:
                try:
                    parsed = _decode_any(content)
                except msgspec.DecodeError as err:
                    status, error_code = "invalid_output", "invalid_json"
                    error_message = f"the answer is not the JSON asked for: {err}"
        return (
            line.custom_id, shard, status, response.status_code, error_code, error_message, model,
            content, refusal, finish_reason, parsed, embedding, input_tokens, cached, output_tokens, reasoning,
            cost, response.request_id, body.created if body.created is not None else _int_or_none(body.created_at),
        )  # fmt: skip

    def _loose_answer(self, line: _LooseLine, shard: int) -> Values:
        """A line whose body is not a shape we know: keep the status code and the raw text."""
        if line.response is None:
            error = line.error if isinstance(line.error, dict) else {}
            known = _LineError(code=_text(error.get("code")), message=_text(error.get("message")))
            return _request_error(line.custom_id, shard, known)
        response = line.response
        return _values(
            line.custom_id,
            shard,
            "failed" if not 200 <= response.status_code < 300 else "invalid_output",
            http_status=response.status_code,
            request_id=_text(response.request_id),
            content=bytes(response.body).decode("utf-8", "replace"),
            error_code="unreadable_body",
            error_message="the response body does not have the shape of this endpoint's answers; raw body kept",
        )

    def _rates_for(self, model: str | None) -> _Rates | None:
        """Per-model prices, looked up once: ``None`` (rows counted as unpriced) when unknown."""
        rates = None if self.prices is None or model is None else _rates(self.prices, model)
        if model is not None:
            self._rates[model] = rates
        return rates


_DEFAULT_VALUES = dict.fromkeys(VALUE_FIELDS) | dict.fromkeys(
    ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens"), 0
)


def _values(custom_id: str, shard: int, status: str, **given: Any) -> Values:
    """A values tuple for the rare rows (errors, unanswered), built by name."""
    merged = {**_DEFAULT_VALUES, **given, "custom_id": custom_id, "shard": shard, "status": status}
    return tuple(merged[name] for name in VALUE_FIELDS)


def _add_usage(sums: list[Any], values: Values) -> None:
    input_tokens, cached, output_tokens, reasoning, cost = values[_INPUT : _COST + 1]
    sums[0] += input_tokens
    sums[1] += cached
    sums[2] += output_tokens
    sums[3] += reasoning
    if cost is None:
        sums[5] += 1
    else:
        sums[4] += cost


def _store_usage(counts: ReconcileCounts, sums: list[Any]) -> None:
    counts.input_tokens += sums[0]
    counts.cached_tokens += sums[1]
    counts.output_tokens += sums[2]
    counts.reasoning_tokens += sums[3]
    counts.cost_usd += sums[4]
    counts.unpriced_rows += sums[5]


def _request_error(custom_id: str, shard: int, error: _LineError | None) -> Values:
    """A line with no response: the service did not run the request (expiry, cancel, timeout…)."""
    code = error.code if error else None
    status = "expired" if code == BATCH_EXPIRED else "cancelled" if code == BATCH_CANCELLED else "failed"
    return _values(custom_id, shard, status, error_code=code, error_message=error.message if error else None)


def _index_ids(custom_ids: Iterable[str], origins: Sequence[Sequence[int]]) -> dict[str, int]:
    """custom_id -> input shard, refusing a shard that repeats an id (its rows could not be one per request)."""
    index: dict[str, int] = {}
    runs = iter(origins)
    shard, left = -1, 0
    for position, custom_id in enumerate(custom_ids, start=1):
        while left <= 0:
            try:
                shard, left = next(runs)
            except StopIteration:
                raise ReconcileError(f"request #{position} ({custom_id!r}) is beyond the shard origins given") from None
        left -= 1
        if custom_id in index:
            raise ReconcileError(f"request #{position}: custom_id {custom_id!r} appears twice in the shard")
        index[custom_id] = shard
    return index


def _rates(prices: PriceTable, model: str) -> _Rates | None:
    try:
        price = prices.price(model)
    except OpenAIBatchInputError:
        return None
    return (price.input, price.input if price.cached_input is None else price.cached_input, price.output)


_Answer = tuple[str | None, str | None, str | None, Any, list[float] | None]


def _extract(body: _Body) -> _Answer:
    """(content, refusal, finish_reason, parsed, embedding) by the shape of the body."""
    if body.choices:
        choice = body.choices[0]
        message = choice.message
        if message is not None:
            return _text(message.content), message.refusal, choice.finish_reason, None, None
        return choice.text, None, choice.finish_reason, None, None
    if body.object == "response":
        return _extract_response(body)
    if body.data and body.data[0].embedding is not None:
        return None, None, None, None, _vector(body.data[0].embedding)
    if body.results is not None:
        return None, None, None, body.results, None
    return None, None, None, None, None


def _extract_response(body: _Body) -> _Answer:
    texts: list[str] = []
    refusal = None
    for item in body.output or ():
        for part in item.content or ():
            if part.type == "output_text":
                texts.append(part.text or "")
            elif part.type == "refusal":
                refusal = part.refusal
    incomplete = body.incomplete_details
    finish_reason = (incomplete.reason if incomplete else None) or body.status
    return ("".join(texts) if texts else None), refusal, finish_reason, None, None


def _vector(embedding: list[float] | str) -> list[float]:
    """Embeddings asked for with ``encoding_format="base64"`` arrive as little-endian float32 bytes."""
    if isinstance(embedding, str):
        values = array("f", base64.b64decode(embedding))
        if sys.byteorder != "little":
            values.byteswap()
        return values.tolist()
    return embedding


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return _encode(value).decode()


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)
