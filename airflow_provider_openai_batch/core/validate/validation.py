"""Streamed validation of batch input JSONL: what the builder wrote and files users bring.

Every problem is reported as ``path:line: message`` with the path as the caller named it, so a
user can jump to it. When a report has errors nothing should be uploaded: the Batch API takes a
bad file and only fails the batch later, in its own validation step.

Speed: lines are decoded straight into the strict struct for their endpoint (``core.validate.bodies``).
A chunk of lines at a time, ``map`` drives the decoder and set operations check the rules that
span lines (one url, one model, unique custom_ids), so no Python bytecode runs per line except
the endpoint's extra check and validation keeps pace with a bare decode loop. A chunk with
anything to report is redone line by line, and a line that fails is parsed again, generically,
to say exactly what is wrong.

Memory stays flat, the custom_ids seen included: every id goes to a spill on local disk, read
back one hash partition at a time by :meth:`Validator.report`, which lists the repeats by line
(``core.validate.seen_ids``). The ids themselves are compared, so a true duplicate is never missed and a
false one never reported. (A set of recent ids checked per chunk, as the builder keeps, would name
near repeats sooner but cost validation a tenth of its time, and the report comes at the end anyway.)
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import operator
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
from airflow_provider_openai_batch.core.limits import (
    MAX_BYTES_PER_FILE,
    MAX_CUSTOM_ID_LENGTH,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_LINE_BYTES,
    MAX_REQUESTS_PER_FILE,
)
from airflow_provider_openai_batch.core.line_blocks import capped_lines
from airflow_provider_openai_batch.core.validate.bodies import (
    ENVELOPE_KEYS,
    RULES_BY_LINE_TYPE,
    RULES_BY_URL,
    EndpointRules,
    Line,
    RequestLine,
    SchemaChecker,
)
from airflow_provider_openai_batch.core.validate.bodies.checks import CLEAN, Inspection, utf8_problem
from airflow_provider_openai_batch.core.validate.seen_ids import FLUSH_ROWS, Repeat, SeenIds

Severity = Literal["error", "warning"]
MAX_PROBLEMS: Final = 100
_BOM: Final = b"\xef\xbb\xbf"
_CRLF: Final = b"\r\n"
CHUNK_LINES: Final = 128  # measured: small enough to stay in cache and cheap to redo, big enough to amortise
_BODY: Final = operator.attrgetter("body")
_MODEL: Final = operator.attrgetter("model")
_CUSTOM_ID: Final = operator.attrgetter("custom_id")
_INPUTS: Final = operator.itemgetter(0)
_POSITION: Final = operator.attrgetter("position")
_PROBLEMS: Final = operator.itemgetter(1)
LINE_TOO_LONG: Final = (
    f"line over {MAX_LINE_BYTES:,} bytes, the cap on one request (about a million tokens of text); "
    "not read further: split it, or pass large images by URL"
)
NESTED_TOO_DEEP: Final = "JSON nested too deeply to read (thousands of levels); no request needs that"
# What a line the strict decoder rejects can raise: malformed JSON, a wrong shape, bad UTF-8.
_REJECTED: Final = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_MSGSPEC_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<where>[^`]*)`)?$", re.DOTALL)
_MSGSPEC_WORDS: Final = (
    ("Object contains unknown field", "unknown key"),
    ("Object missing required field", "missing required key"),
    ("Invalid enum value", "invalid value"),
    ("Invalid value", "invalid value"),
    ("Expected", "expected"),
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or, as a warning, odd) with the input, where the user can find it."""

    path: str
    line: int | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        marker = "warning: " if self.severity == "warning" else ""
        return f"{where}: {marker}{self.message}"


@dataclass(frozen=True)
class FileSummary:
    """What one file held; ``url`` and ``model`` are those of its first line that named them."""

    path: str
    requests: int
    bytes: int
    url: str | None
    model: str | None
    embedding_inputs: int
    errors: int
    warnings: int
    crlf_lines: int = 0

    @property
    def ok(self) -> bool:
        return self.errors == 0


class BatchInputError(OpenAIBatchInputError):
    """The batch input failed validation; ``report`` holds every count and the first problems."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        failing = [summary.path for summary in report.files if summary.errors]
        noun = "problem" if report.error_count == 1 else "problems"
        super().__init__(
            f"{report.error_count:,} {noun} in batch input {', '.join(failing) or 'the input'}; fix them before "
            f"submitting (nothing was uploaded):\n{report.format()}",
            path=failing[0] if len(failing) == 1 else None,
        )


@dataclass(frozen=True)
class ValidationReport:
    """The outcome for a whole job: the first problems, full counts, and one summary per file."""

    problems: tuple[Problem, ...]
    error_count: int
    warning_count: int
    files: tuple[FileSummary, ...]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return self.error_count == 0

    def format(self, limit: int = MAX_PROBLEMS) -> str:
        """``path:line: message`` lines, then ``... and N more problems`` when some are left out."""
        shown = [str(problem) for problem in self.problems[:limit]]
        hidden = self.error_count + self.warning_count - len(shown)
        if hidden > 0:
            shown.append(f"... and {hidden:,} more problem{'' if hidden == 1 else 's'}")
        return "\n".join(shown)

    def raise_for_errors(self) -> None:
        """Raise ``BatchInputError`` listing the problems when there is any error."""
        if not self.ok:
            raise BatchInputError(self)


_LINE_BITS = 40  # a line's position in the job: (file index << _LINE_BITS) + line number


def _duplicate_message(custom_id: str) -> str:
    return f"duplicate custom_id {custom_id!r}; custom_ids must be unique across the job"


class _File:
    """Running counts and first-seen url and model of the file being read."""

    __slots__ = (
        "bytes",
        "crlf_lines",
        "errors",
        "inputs",
        "label",
        "model",
        "model_line",
        "position",
        "requests",
        "rules",
        "url_line",
        "warnings",
    )

    def __init__(self, label: str, position: int = 0) -> None:
        self.label = label
        self.position = position  # of its line 0 in the job: the file's index above _LINE_BITS
        self.requests = self.bytes = self.inputs = self.crlf_lines = 0
        self.errors = self.warnings = 0
        self.rules: EndpointRules | None = None
        self.url_line = self.model_line = 0
        self.model: str | None = None

    def summary(self) -> FileSummary:
        url = self.rules.url if self.rules else None
        return FileSummary(
            path=self.label,
            requests=self.requests,
            bytes=self.bytes,
            url=url,
            model=self.model,
            embedding_inputs=self.inputs,
            errors=self.errors,
            warnings=self.warnings,
            crlf_lines=self.crlf_lines,
        )


def _agrees(first: object, this: object) -> bool:
    """Whether ``this`` matches the file's first value (or is the first, when there was none)."""
    return first is None or first is this or first == this


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def describe_decode_error(exc: Exception, root: str = "body") -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.max_tokens``` as ``expected ... at body.max_tokens``."""
    match = _MSGSPEC_AT.match(str(exc))
    what, where = (match["what"], match["where"] or "") if match else (str(exc), "")
    for theirs, ours in _MSGSPEC_WORDS:
        if what.startswith(theirs):
            what = ours + what[len(theirs) :]
            break
    return f"{what} at {root}{where}"


class Validator:
    """Checks one job's input files, keeping what must hold across them (unique custom_ids).

    Feed it every shard of a job (``validate_file`` / ``validate_lines``), then read
    ``report()``, once all are in. Limits default to the API's; pass smaller ones in tests.
    Repeated custom_ids are found at ``report()``, from a spill on local disk; ``id_window > 0``
    also holds that many recent ids in memory to catch a near repeat as its line is read;
    ``id_flush_rows`` ids are buffered before each write to the spill, and lines are checked
    ``chunk_lines`` at a time.
    """

    def __init__(
        self,
        *,
        max_requests: int = MAX_REQUESTS_PER_FILE,
        max_bytes: int = MAX_BYTES_PER_FILE,
        max_embedding_inputs: int = MAX_EMBEDDING_INPUTS_PER_BATCH,
        max_problems: int = MAX_PROBLEMS,
        id_window: int = 0,
        id_flush_rows: int = FLUSH_ROWS,
        chunk_lines: int = CHUNK_LINES,
    ) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_embedding_inputs = max_embedding_inputs
        self.max_problems = max_problems
        self._decoder = msgspec.json.Decoder(RequestLine)
        self._body_decoders = {url: rules.body_decoder() for url, rules in RULES_BY_URL.items()}
        self._schemas = SchemaChecker()
        self._seen = SeenIds(id_window, flush_rows=id_flush_rows)  # see the module docstring
        self._chunk_lines = chunk_lines
        self._labels: list[str] = []  # of the files begun, for the positions of repeats found late
        self._reported: ValidationReport | None = None
        self._problems: list[Problem] = []
        self._files: list[FileSummary] = []
        self._errors = self._warnings = 0

    # --- public ----------------------------------------------------------------------------

    def validate_file(self, path: str | os.PathLike[str], label: str | None = None) -> FileSummary:
        """Stream the file at ``path`` (binary, so bytes are checked as stored)."""
        with open(path, "rb") as stream:
            return self.validate_lines(os.fspath(path) if label is None else label, capped_lines(stream))

    def validate_lines(self, path_label: str, lines: Iterable[bytes]) -> FileSummary:
        """Check one file given as raw lines with their endings (any binary file object will do)."""
        if self._reported is not None:
            raise RuntimeError("this validator has reported; use a new one for more files")
        file = _File(path_label, len(self._labels) << _LINE_BITS)
        self._labels.append(path_label)
        iterator = iter(lines)
        first = next(iterator, None)
        if first is not None:
            if first.startswith(_BOM):
                self._error(file, 1, "file starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM")
                file.bytes += len(_BOM)
                first = first[len(_BOM) :]
            self._scan(file, itertools.chain((first,) if first else (), iterator))
        self._finish(file)
        summary = file.summary()
        self._files.append(summary)
        return summary

    def report(self) -> ValidationReport:
        """Everything found, over all files: the end of this validator (repeated custom_ids are found here)."""
        if self._reported is None:
            self._report_late_repeats()
            files = {label: index for index, label in reversed(list(enumerate(self._labels)))}
            # In file and line order, the repeats found last among them; a file's own limits after its lines.
            problems = sorted(self._problems, key=lambda p: (files[p.path], sys.maxsize if p.line is None else p.line))
            self._reported = ValidationReport(tuple(problems), self._errors, self._warnings, tuple(self._files))
        return self._reported

    def _report_late_repeats(self) -> None:
        """Repeats found in the spill: each counts for its file, the first ones are listed in line order."""
        errors: Counter[int] = Counter()

        def counted(repeats: Iterable[Repeat]) -> Iterator[Repeat]:
            for repeat in repeats:
                errors[repeat.position >> _LINE_BITS] += 1
                yield repeat

        repeats = counted(self._seen.finish())
        room = max(self.max_problems - len(self._problems), 0)
        for repeat in heapq.nsmallest(room, repeats, key=_POSITION):  # a heap of ``room``, not every repeat
            index, number = divmod(repeat.position, 1 << _LINE_BITS)
            self._keep(Problem(self._labels[index], number, _duplicate_message(repeat.custom_id)))
        collections.deque(repeats, maxlen=0)  # with no room left, the rest are still counted
        self._errors += errors.total()
        for index, count in errors.items():
            if index < len(self._files):  # a file whose reading failed has no summary
                self._files[index] = dataclasses.replace(self._files[index], errors=self._files[index].errors + count)

    # --- the fast path: a chunk at a time, in C ----------------------------------------------

    def _scan(self, file: _File, lines: Iterator[bytes]) -> None:
        """Take chunks of lines; a chunk with anything to report is redone line by line."""
        start = 0
        while chunk := list(itertools.islice(lines, self._chunk_lines)):
            if not self._scan_chunk(file, start, chunk):
                self._scan_lines(file, start, chunk)
            start += len(chunk)

    def _scan_chunk(self, file: _File, start: int, chunk: list[bytes]) -> bool:
        """Check a clean chunk with C-level passes only; False (and no effect) when not clean.

        ``map`` drives the decoder and the per-line rules (one url, one model, unique custom_ids
        via set operations) from C, so no Python bytecode runs per line apart from the
        endpoint's extra check, and validation keeps pace with a bare decode loop.
        """
        if max(map(len, chunk)) > MAX_LINE_BYTES:
            return False
        try:
            batch = list(map(self._decoder.decode, chunk))
        except _REJECTED:
            return False
        kinds = set(map(type, batch))
        if len(kinds) != 1:
            return False
        rules = RULES_BY_LINE_TYPE[kinds.pop()]
        bodies = list(map(_BODY, batch))
        models = set(map(_MODEL, bodies))
        model = models.pop()
        if models or not _agrees(file.rules, rules) or not _agrees(file.model, model):
            return False
        if not self._seen.add_all(list(map(_CUSTOM_ID, batch)), file.position + start + 1):
            return False
        results = [] if rules.plain(bodies) else list(map(rules.check, bodies, chunk, itertools.repeat(self._schemas)))
        self._commit_chunk(file, start, chunk, rules, model)
        if results.count(CLEAN) != len(results):
            self._take_results(file, start, results)
        return True

    def _commit_chunk(
        self,
        file: _File,
        start: int,
        chunk: list[bytes],
        rules: EndpointRules,
        model: str,
    ) -> None:
        file.requests += len(chunk)
        file.bytes += sum(map(len, chunk))
        if file.rules is None:
            file.rules, file.url_line = rules, start + 1
        if file.model is None:
            file.model, file.model_line = model, start + 1
        crlf = sum(map(bytes.endswith, chunk, itertools.repeat(_CRLF)))
        if crlf and not file.crlf_lines:
            first = next(index for index, line in enumerate(chunk) if line.endswith(_CRLF))
            self._warn_crlf(file, start + first + 1)
        file.crlf_lines += crlf

    def _take_results(self, file: _File, start: int, results: list[Inspection]) -> None:
        """Inputs counted and problems found by the endpoint's extra checks."""
        file.inputs += sum(map(_INPUTS, results))
        if any(map(_PROBLEMS, results)):
            for number, (_, problems) in enumerate(results, start + 1):
                self._errors_at(file, number, problems)

    # --- the line-by-line path, for chunks with something to report ------------------------

    def _scan_lines(self, file: _File, start: int, chunk: list[bytes]) -> None:
        for number, line in enumerate(chunk, start + 1):
            file.bytes += len(line)
            if line.endswith(_CRLF):
                if not file.crlf_lines:
                    self._warn_crlf(file, number)
                file.crlf_lines += 1
            if len(line) > MAX_LINE_BYTES:
                file.requests += 1
                self._error(file, number, LINE_TOO_LONG)
                continue
            try:
                request = self._decoder.decode(line)
            except _REJECTED as exc:
                self._explain(file, number, line, exc)
                continue
            file.requests += 1
            self._accept(file, number, request, line)

    def _accept(self, file: _File, number: int, request: Line, line: bytes) -> None:
        """The cross-line rules and extra checks for a line that decoded cleanly."""
        rules = RULES_BY_LINE_TYPE[type(request)]
        body = request.body  # type: ignore[attr-defined]  # every concrete line type has one
        self._note_url(file, number, rules)
        self._note_model(file, number, body.model)
        self._note_custom_id(file, number, request.custom_id)
        inputs, problems = rules.check(body, line, self._schemas)
        file.inputs += inputs
        self._errors_at(file, number, problems)

    def _warn_crlf(self, file: _File, number: int) -> None:
        self._warn(file, number, "CRLF line endings (first here); accepted, but LF is expected")

    # --- cross-line rules, shared by the fast and the slow path ----------------------------

    def _note_url(self, file: _File, number: int, rules: EndpointRules) -> type:
        """The file's url is its first line's; another one is an error (one endpoint per file)."""
        if file.rules is None:
            file.rules, file.url_line = rules, number
        elif rules is not file.rules:
            self._error(
                file,
                number,
                f"url {rules.url!r} differs from {file.rules.url!r} on line {file.url_line}; "
                "a batch file holds one endpoint",
            )
        return file.rules.line_type

    def _note_model(self, file: _File, number: int, model: str) -> str:
        """The file's model is its first line's; another one is an error (one model per file)."""
        if file.model is None:
            file.model, file.model_line = model, number
        elif model != file.model:
            self._error(
                file,
                number,
                f"body.model {model!r} differs from {file.model!r} on line {file.model_line}; "
                "a batch file holds one model",
            )
        return file.model

    def _note_custom_id(self, file: _File, number: int, custom_id: str) -> None:
        if not self._seen.add(custom_id, file.position + number):
            self._error(file, number, _duplicate_message(custom_id))

    # --- the slow path: say exactly why a line was rejected --------------------------------

    def _explain(self, file: _File, number: int, line: bytes, exc: Exception) -> None:
        """Say exactly why the strict decoder rejected ``line``, re-reading it generically."""
        if not line.strip():
            self._error(file, number, "blank line; every line must hold one JSON request (remove it)")
            return
        file.requests += 1
        errors_before = file.errors
        value = self._parse(file, number, line)
        if value is not None:
            self._check_envelope(file, number, value, line)
        if file.errors == errors_before:  # never let a rejected line pass unexplained
            self._error(file, number, f"rejected by the strict decoder: {exc}")

    def _parse(self, file: _File, number: int, line: bytes) -> dict[str, Any] | None:
        problem = utf8_problem(line)
        if problem:
            self._error(file, number, problem)
            return None
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            self._error(file, number, f"not valid JSON: {exc}")
            return None
        except RecursionError:
            self._error(file, number, NESTED_TOO_DEEP)
            return None
        if not isinstance(value, dict):
            self._error(file, number, f"a line must be a JSON object, got {_json_type(value)}")
            return None
        return value

    def _check_envelope(self, file: _File, number: int, value: dict[str, Any], line: bytes) -> None:
        for key in ENVELOPE_KEYS:
            if key not in value:
                self._error(file, number, f"missing top-level key {key!r}")
        unknown = [key for key in value if key not in ENVELOPE_KEYS]
        if unknown:
            names = ", ".join(repr(key) for key in unknown)
            self._error(file, number, f"unknown top-level key {names}; a line holds only {', '.join(ENVELOPE_KEYS)}")
        if "custom_id" in value:
            self._check_custom_id(file, number, value["custom_id"])
        if "method" in value and value["method"] != "POST":
            self._error(file, number, f'method must be "POST", got {value["method"]!r}')
        rules = self._check_url(file, number, value["url"]) if "url" in value else None
        if "body" in value:
            self._check_body(file, number, value["body"], rules, line)

    def _check_custom_id(self, file: _File, number: int, custom_id: object) -> None:
        if not isinstance(custom_id, str):
            self._error(file, number, f"custom_id must be a string, got {_json_type(custom_id)}")
            return
        if not custom_id:
            self._error(file, number, "custom_id is empty; each request needs its own id to match its answer")
        elif len(custom_id) > MAX_CUSTOM_ID_LENGTH:
            self._error(
                file, number, f"custom_id is {len(custom_id):,} characters, over the limit of {MAX_CUSTOM_ID_LENGTH}"
            )
        self._note_custom_id(file, number, custom_id)

    def _check_url(self, file: _File, number: int, url: object) -> EndpointRules | None:
        rules = RULES_BY_URL.get(url) if isinstance(url, str) else None
        if rules is None:
            self._error(file, number, f"unsupported url {url!r}; the Batch API takes {', '.join(RULES_BY_URL)}")
            return None
        self._note_url(file, number, rules)
        return rules

    def _check_body(self, file: _File, number: int, body: object, rules: EndpointRules | None, line: bytes) -> None:
        if not isinstance(body, dict):
            self._error(file, number, f"body must be a JSON object, got {_json_type(body)}")
            return
        probe = dict(body)
        if "model" not in body:
            self._error(file, number, "missing body.model; every request names its model")
            probe["model"] = ""  # reported once, not again by the typed check below
        elif isinstance(body["model"], str):
            self._note_model(file, number, body["model"])
        if body.get("stream") is True:
            self._error(file, number, "body.stream is true; a batch cannot stream (remove it)")
            del probe["stream"]
        if rules is not None:
            self._check_typed_body(file, number, probe, rules, line)

    def _check_typed_body(
        self, file: _File, number: int, body: dict[str, Any], rules: EndpointRules, line: bytes
    ) -> None:
        try:
            typed = self._body_decoders[rules.url].decode(msgspec.json.encode(body))
        except msgspec.ValidationError as exc:
            self._error(file, number, f"invalid body for {rules.url}: {describe_decode_error(exc)}")
            return
        inputs, problems = rules.check(typed, line, self._schemas)
        file.inputs += inputs
        self._errors_at(file, number, problems)

    # --- limits and bookkeeping ------------------------------------------------------------

    def _finish(self, file: _File) -> None:
        """The per-file rules that need the whole file."""
        if file.requests == 0:
            self._error(file, None, "empty file: no requests (the Batch API refuses an empty file)")
        if file.requests > self.max_requests:
            self._error(
                file,
                None,
                f"{file.requests:,} requests, over the limit of {self.max_requests:,} per file; split it into shards",
            )
        if file.bytes > self.max_bytes:
            self._error(
                file,
                None,
                f"{file.bytes:,} bytes, over the limit of {self.max_bytes:,} bytes "
                f"({self.max_bytes / 2**20:g} MB) per file; split it into shards",
            )
        if file.inputs > self.max_embedding_inputs:
            self._error(
                file,
                None,
                f"{file.inputs:,} embedding inputs, over the limit of {self.max_embedding_inputs:,} "
                "per batch; split it into shards",
            )

    def _errors_at(self, file: _File, number: int, messages: Iterable[str]) -> None:
        for message in messages:
            self._error(file, number, message)

    def _error(self, file: _File, number: int | None, message: str) -> None:
        file.errors += 1
        self._errors += 1
        self._keep(Problem(file.label, number, message))

    def _warn(self, file: _File, number: int | None, message: str) -> None:
        file.warnings += 1
        self._warnings += 1
        self._keep(Problem(file.label, number, message, "warning"))

    def _keep(self, problem: Problem) -> None:
        if len(self._problems) < self.max_problems:
            self._problems.append(problem)


def validate_paths(paths: Iterable[str | os.PathLike[str]], **limits: int) -> ValidationReport:
    """Validate the files of one job together (duplicates are caught across them)."""
    validator = Validator(**limits)
    for path in paths:
        validator.validate_file(path)
    return validator.report()
