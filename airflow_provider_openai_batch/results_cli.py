"""``openai-batch reconcile``: reconcile a batch run outside Airflow into Parquet or JSONL.

For users who submitted a batch themselves: give the request file and the output (and error)
file the service returned; every request gets one row, written atomically to ``--dest``, and the
counts by status are printed. Airflow is not needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

EXIT_PROBLEMS, EXIT_USAGE = 1, 2
RESULT_COUNT_KEYS = ("requests", "succeeded", "failed", "invalid_output", "expired", "cancelled", "missing")
BATCH_STATUSES = ("completed", "expired", "cancelled")


def add_reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", required=True, type=Path, help="the batch input JSONL (the requests)")
    parser.add_argument("--output", type=Path, help="the batch's output file (JSONL)")
    parser.add_argument("--errors", type=Path, help="the batch's error file (JSONL), if it has one")
    parser.add_argument("--dest", required=True, type=Path, help="where to write the rows: *.parquet or *.jsonl")
    parser.add_argument("--job-id", help="the job_id column (default: the requests file's name, said in the output)")
    parser.add_argument("--batch-id", default="", help="the batch_id column, e.g. batch_abc123 (default: empty)")
    parser.add_argument(
        "--batch-status",
        choices=BATCH_STATUSES,
        default="completed",
        help="how the batch ended: requests without a line become expired/cancelled rows, else missing",
    )
    parser.add_argument(
        "--expect-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="parse answers as JSON (default: when the first request asks for a JSON response format)",
    )
    parser.add_argument("--prices", help="a JSON file of Batch prices overriding the packaged table")
    parser.add_argument(
        "--allow-unknown",
        action="store_true",
        help="write the rows even when most answer lines name custom_ids the requests do not have "
        "(by default that means the output file belongs to another batch, and nothing is written)",
    )
    parser.add_argument(
        "--processes",
        type=_processes,
        default="auto",
        help="worker processes that reconcile ranges of the output side by side: a number, or 'auto' (the "
        "default: the cores this process may use, one per 20,000 requests, so a small batch stays in one process)",
    )


def _processes(value: str) -> int | str:
    from airflow_provider_openai_batch.core.collect.processes import check_processes

    try:
        return check_processes(value if value == "auto" else int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'auto' or a whole number of at least 1, not {value!r}") from None


def run_reconcile(args: argparse.Namespace) -> int:
    """Exit 0 with the counts; 1 with a message for any problem with the files; 2 without --output/--errors."""
    if args.output is None and args.errors is None and args.batch_status == "completed":
        print(
            "openai-batch reconcile: give --output, --errors or both (a batch that expired or was cancelled "
            "before answering anything: --batch-status expired|cancelled without them)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return _reconcile(args)
    except _Refused as problem:
        print(f"openai-batch reconcile: {problem}", file=sys.stderr)
        return EXIT_PROBLEMS


class _Refused(Exception):
    """A problem with the files given, reported as one message and exit 1 (never a traceback)."""


def _reconcile(args: argparse.Namespace) -> int:
    from airflow_provider_openai_batch.core.collect.attempt import (
        FileLines,
        FileLineSets,
        ShardRun,
        collect_attempt,
        reconcile_pool,
    )
    from airflow_provider_openai_batch.core.collect.processes import resolve_processes
    from airflow_provider_openai_batch.core.collect.result_table import batch_writer, format_of
    from airflow_provider_openai_batch.core.collect.results import BatchOutcome, ReconcileError
    from airflow_provider_openai_batch.core.costs import PriceTable
    from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError
    from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory

    for path in (args.requests, args.output, args.errors):
        if path is not None:
            _check_readable(path)
    try:
        fmt = format_of(str(args.dest))
        prices = PriceTable.load(args.prices)
    except (ValueError, OpenAIBatchInputError) as problem:
        raise _Refused(problem) from None
    requests = _check_requests(args.requests)
    job_id = args.job_id or args.requests.stem
    if not args.job_id:
        print(f"job_id={job_id} (the requests file's name; --job-id to choose it)", file=sys.stderr)
    outcome = BatchOutcome(
        job_id=job_id,
        shard=0,
        batch_id=args.batch_id,
        status=args.batch_status,
        expect_json=_expects_json(args.requests) if args.expect_json is None else args.expect_json,
    )
    # Picklable openers over the local files: a worker process opens its range of them by itself.
    run = ShardRun(
        outcome,
        requests=FileLines(str(args.requests)),
        results=FileLineSets(tuple(str(p) for p in (args.output, args.errors) if p is not None)),
    )
    processes = resolve_processes(args.processes, 1, requests)
    try:
        # The memory pool, then the workers (forked with it, as the results task's are), before the
        # writer's thread exists.
        with (
            pool_that_returns_memory(),
            reconcile_pool(processes) as pool,
            _atomic_local(args.dest) as handle,
            batch_writer(handle, fmt) as writer,
        ):
            if pool is not None:
                print(f"reconciling in {processes} worker processes (--processes)", file=sys.stderr)
            report = collect_attempt([run], 1, writer, prices=prices, pool=pool, shards=1)
            _check_answers_belong(report, args)  # raising here publishes nothing
    except OSError as problem:
        name = str(problem.filename or "")
        where = name if name and not name.endswith(".partial") else f"cannot write {args.dest}"
        raise _Refused(f"{where}: {problem.strerror or problem}") from None
    except ReconcileError as problem:
        raise _Refused(f"{args.requests}: {problem}") from None
    counts = report.counts.to_dict()
    print(" ".join(f"{key}={counts[key]}" for key in RESULT_COUNT_KEYS))
    print(
        f"input_tokens={counts['input_tokens']} output_tokens={counts['output_tokens']} cost_usd={counts['cost_usd']}"
    )
    for found in report.anomalies:
        print(f"warning: {found.describe()} were counted and not written", file=sys.stderr)
    print(f"wrote {report.staged_rows} rows to {args.dest} ({fmt})")
    return 0


def _check_answers_belong(report: Any, args: argparse.Namespace) -> None:
    """Most answer lines naming ids the requests lack means the wrong output file: refuse to write."""
    if args.allow_unknown:
        return
    counts = report.counts.to_dict()
    unknown = sum(found.unknown_custom_ids for found in report.anomalies)
    unanswered = counts["missing"] + counts["expired"] + counts["cancelled"]
    joined = counts["requests"] - unanswered
    if unknown > joined:
        files = " and ".join(str(p) for p in (args.output, args.errors) if p is not None)
        raise _Refused(
            f"{unknown} answer line(s) of {files} name custom_ids {args.requests} does not have, and only "
            f"{joined} match: the answers look like another batch's; nothing was written "
            "(--allow-unknown writes the rows anyway)"
        )


# What a batch file cannot start with: the service reads and writes plain UTF-8 JSONL.
_WRONG_STARTS = (
    (b"\x1f\x8b", "gzip-compressed; the Batch API's files are plain JSONL: gunzip it first"),
    (b"\xff\xfe", "UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8"),
)


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            start = handle.read(2)
    except FileNotFoundError:
        raise _Refused(f"{path}: no such file") from None
    except OSError as problem:
        raise _Refused(f"{path}: {problem.strerror or problem}") from None
    for magic, why in _WRONG_STARTS:
        if start == magic:
            raise _Refused(f"{path}: {why}")


class _Id(msgspec.Struct):
    custom_id: str


def _check_requests(path: Path, most: int = 10) -> int:
    """
    The number of requests in ``path``; refuse a file whose custom_ids cannot be joined: each line
    one JSON object with its own non-empty string ``custom_id``. Reconciling trusts the ids, so each
    problem is named by line here.
    """
    from airflow_provider_openai_batch.core.validate.bodies.checks import utf8_problem
    from airflow_provider_openai_batch.core.validate.validation import NESTED_TOO_DEEP

    decode = msgspec.json.Decoder(_Id).decode
    first_line: dict[str, int] = {}
    problems: list[str] = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        why = None
        try:
            custom_id = decode(line).custom_id
        except UnicodeDecodeError:
            why = utf8_problem(line) or "not valid UTF-8"
        except RecursionError:
            why = NESTED_TOO_DEEP
        except msgspec.DecodeError as problem:
            why = f"not a request line: {problem}"
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                why = "starts with a UTF-8 byte order mark (BOM); save the file as UTF-8 without BOM"
        else:
            if not custom_id:
                why = "custom_id is empty"
            elif (seen := first_line.setdefault(custom_id, number)) != number:
                why = f"custom_id {custom_id!r} repeats line {seen}; each request needs its own"
        if why is not None:
            problems.append(f"{path}:{number}: {why}")
            if len(problems) == most:
                break
    if not problems and not first_line:
        problems.append(f"{path}: empty file: no requests to reconcile")
    if problems:
        raise _Refused("the requests cannot be joined to answers:\n" + "\n".join(problems))
    return len(first_line)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from handle


class _Format(msgspec.Struct):
    type: str | None = None


class _Text(msgspec.Struct):
    format: _Format | None = None


class _Body(msgspec.Struct):
    response_format: _Format | None = None
    text: _Text | None = None


class _Request(msgspec.Struct):
    body: _Body | None = None


def _expects_json(requests: Path) -> bool:
    """Whether the first request asks for JSON (chat ``response_format`` or responses ``text.format``)."""
    for line in _lines(requests):
        if line.strip():
            try:
                body = msgspec.json.decode(line, type=_Request).body
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                return False
            fmt = body and (body.response_format or (body.text.format if body.text else None))
            return bool(fmt and fmt.type in ("json_schema", "json_object"))
    return False


class _atomic_local:
    """A local file written beside ``path`` and renamed over it on success, removed on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        self._handle = os.fdopen(fd, "wb")
        return self._handle

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self._handle.close()
        if error is None:
            os.replace(self._temp, self.path)
        else:
            os.unlink(self._temp)
