"""Batch input files users bring: validated, fingerprinted and estimated in one streamed pass.

Used by ``openai-batch validate`` / ``openai-batch estimate`` and the validate operator, so a
JSONL file written by other tools gets the same checks as the builder's shards, and becomes a
shard (path, counts, sha256, estimate) the submit operator takes. Files are read through a
caller's reader, once; memory stays flat apart from the validator's custom_id hashes. Imports
nothing from Airflow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import msgspec

from airflow_provider_openai_batch.core.build.building import JobEstimate, ShardReader
from airflow_provider_openai_batch.core.costs import Estimate, PriceTable, UnknownModelPriceError
from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import MAX_LINE_BYTES
from airflow_provider_openai_batch.core.line_blocks import capped_lines
from airflow_provider_openai_batch.core.shards import Shard
from airflow_provider_openai_batch.core.tokens import count_request_tokens
from airflow_provider_openai_batch.core.validate.validation import (
    LINE_TOO_LONG,
    NESTED_TOO_DEEP,
    FileSummary,
    ValidationReport,
    Validator,
)


class _Request(msgspec.Struct):
    url: str = ""
    body: dict = msgspec.field(default_factory=dict)


class _Id(msgspec.Struct):
    custom_id: str = ""


class _FirstLine(msgspec.Struct):
    body: dict = msgspec.field(default_factory=dict)


# What reading an untrusted line can raise besides a clean result: bad JSON, bad UTF-8, and JSON
# nested deeper than the decoder's recursion allows.
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_BOM = b"\xef\xbb\xbf"

_decode_request = msgspec.json.Decoder(_Request).decode
_decode_id = msgspec.json.Decoder(_Id).decode
_decode_first = msgspec.json.Decoder(_FirstLine).decode


class LineEstimator:
    """Input tokens (exact, per body) and the output ceiling of request lines as they stream by.

    Lines that do not decode, or whose endpoint has no token counter, are counted in ``skipped``;
    the first few are kept in ``problems`` as ``(line number, why)`` (the validator reports
    everything wrong with them).
    """

    MAX_PROBLEMS = 10

    def __init__(self) -> None:
        self.requests = self.input_tokens = self.max_output_tokens = self.uncapped = self.skipped = 0
        self.lines = 0
        # model -> [input tokens, output ceiling]: each model is priced at its own rates
        self.models: dict[str, list[int]] = {}
        self.problems: list[tuple[int, str]] = []
        self.note = ""

    def add(self, line: bytes) -> None:
        self.lines += 1
        if len(line) > MAX_LINE_BYTES:
            self._skip(LINE_TOO_LONG)
            return
        if not line.strip():
            return
        try:
            request = _decode_request(line)
            model = request.body.get("model")
            if not isinstance(model, str) or not model:
                self._skip("the body names no model: its tokens cannot be counted nor priced")
                return
            tokens = count_request_tokens(request.url, request.body)
        except (*_UNREADABLE, OpenAIBatchInputError, TypeError, AttributeError) as err:
            self._skip(_why_unreadable(line, err))
            return
        self.requests += 1
        self.input_tokens += tokens.input_tokens
        self.max_output_tokens += tokens.max_output_tokens
        self.uncapped += tokens.output_limit_assumed
        totals = self.models.setdefault(model, [0, 0])
        totals[0] += tokens.input_tokens
        totals[1] += tokens.max_output_tokens

    def _skip(self, why: str) -> None:
        self.skipped += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append((self.lines, why))
        self.note = f"{self.skipped} line(s) not estimated (first: line {self.problems[0][0]})"

    def estimate(self, prices: PriceTable) -> JobEstimate:
        """Totals, each model priced at its own rates; unpriced when a model has no price."""
        model = ", ".join(sorted(self.models)) or "no model"
        note, cost, unpriced = self.note, 0.0, []
        for name, (input_tokens, output_tokens) in sorted(self.models.items()):
            try:
                cost += prices.cost(name, input_tokens, output_tokens)
            except UnknownModelPriceError as err:
                unpriced.append(str(err))
        if unpriced:
            cost = 0.0
            note = "; ".join(filter(None, (note, *unpriced)))
        total = Estimate(self.requests, self.input_tokens, self.max_output_tokens, cost, model, self.uncapped)
        return JobEstimate(total, "exact", priced=not unpriced, note=note)


@dataclass(frozen=True)
class InspectedFile:
    """One file's validation summary, fingerprint and estimate."""

    summary: FileSummary
    sha256: str
    first_custom_id: str
    last_custom_id: str
    estimator: LineEstimator | None
    expects_json: bool = False

    def shard(self, index: int, prices: PriceTable | None = None) -> Shard:
        """The file as a shard the submit operator takes (estimates filled when counted and priced)."""
        estimate = self.estimator.estimate(prices) if self.estimator and prices else None
        total = estimate.total if estimate else None
        return Shard(
            index=index,
            path=self.summary.path,
            requests=self.summary.requests,
            bytes=self.summary.bytes,
            sha256=self.sha256,
            first_custom_id=self.first_custom_id,
            last_custom_id=self.last_custom_id,
            input_tokens=total.input_tokens if total else None,
            max_output_tokens=total.max_output_tokens if total else None,
            cost_usd=total.cost_usd if total and estimate and estimate.priced else None,
        )


class _Tee:
    """Hands a file's lines on while hashing them, noting the first and last, and estimating each."""

    def __init__(self, lines: Iterable[bytes], estimator: LineEstimator | None) -> None:
        self._lines = lines
        self._estimator = estimator
        self.hash = hashlib.sha256()
        self.first = self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        update, add = self.hash.update, (self._estimator.add if self._estimator else None)
        for line in self._lines:
            update(line)
            if add is not None:
                add(line)
            if not self.first:
                self.first = line
            self.last = line
            yield line


def _why_unreadable(line: bytes, err: Exception) -> str:
    if line.startswith(_BOM):
        return "starts with a UTF-8 byte order mark (BOM); save the file as UTF-8 without BOM"
    if isinstance(err, UnicodeDecodeError):
        return "not valid UTF-8; save the file as UTF-8"
    if isinstance(err, RecursionError):
        return NESTED_TOO_DEEP
    return str(err)


def _custom_id(line: bytes) -> str:
    try:
        return _decode_id(line).custom_id
    except _UNREADABLE:
        return ""


def _expects_json(line: bytes) -> bool:
    """Whether the file's first request asks for JSON output (results then parse it)."""
    try:
        body = _decode_first(line).body
    except _UNREADABLE:
        return False
    fmt = body.get("response_format") or (body.get("text") or {}).get("format") or {}
    return isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")


def inspect_files(
    paths: Sequence[str], reader: ShardReader, *, estimate: bool = True, per_file: bool = False, **limits: int
) -> tuple[ValidationReport, list[InspectedFile]]:
    """Validate the files as one job (custom_ids unique across them unless ``per_file``), in one pass each.

    Paths are reported as given. With ``estimate`` each line's tokens are counted exactly.
    """
    validator = Validator(**limits)
    inspected: list[InspectedFile] = []
    reports: list[ValidationReport] = []
    for path in paths:
        if per_file and inspected:
            reports.append(validator.report())
            validator = Validator(**limits)
        estimator = LineEstimator() if estimate else None
        with reader(path) as handle:
            tee = _Tee(capped_lines(handle), estimator)
            summary = validator.validate_lines(path, tee)
        inspected.append(
            InspectedFile(
                summary,
                tee.hash.hexdigest(),
                _custom_id(tee.first),
                _custom_id(tee.last),
                estimator,
                _expects_json(tee.first),
            )
        )
    reports.append(validator.report())
    return _merged(reports), inspected


def _merged(reports: list[ValidationReport]) -> ValidationReport:
    if len(reports) == 1:
        return reports[0]
    return ValidationReport(
        problems=tuple(p for r in reports for p in r.problems),
        error_count=sum(r.error_count for r in reports),
        warning_count=sum(r.warning_count for r in reports),
        files=tuple(f for r in reports for f in r.files),
    )
