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

RESULT_COUNT_KEYS = ("requests", "succeeded", "failed", "invalid_output", "expired", "cancelled", "missing")
BATCH_STATUSES = ("completed", "expired", "cancelled")


def add_reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--requests", required=True, type=Path, help="the batch input JSONL (the requests)")
    parser.add_argument("--output", type=Path, help="the batch's output file (JSONL)")
    parser.add_argument("--errors", type=Path, help="the batch's error file (JSONL), if it has one")
    parser.add_argument("--dest", required=True, type=Path, help="where to write the rows: *.parquet or *.jsonl")
    parser.add_argument("--job-id", help="the job_id column (default: the requests file's name)")
    parser.add_argument("--batch-id", default="", help="the batch_id column (default: the output file's name)")
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


def run_reconcile(args: argparse.Namespace) -> int:
    from airflow_provider_openai_batch.core.collect import ShardRun, collect_attempt
    from airflow_provider_openai_batch.core.costs import PriceTable
    from airflow_provider_openai_batch.core.memory_pool import pool_that_returns_memory
    from airflow_provider_openai_batch.core.result_table import batch_writer, format_of
    from airflow_provider_openai_batch.core.results import BatchOutcome

    if args.output is None and args.errors is None:
        print("openai-batch reconcile: give --output, --errors or both", file=sys.stderr)
        return 2
    for path in (args.requests, args.output, args.errors):
        if path is not None and not path.is_file():
            print(f"openai-batch reconcile: {path}: no such file", file=sys.stderr)
            return 2
    try:
        fmt = format_of(str(args.dest))
    except ValueError as problem:
        print(f"openai-batch reconcile: {problem}", file=sys.stderr)
        return 2
    answers = args.output or args.errors
    outcome = BatchOutcome(
        job_id=args.job_id or args.requests.stem,
        shard=0,
        batch_id=args.batch_id or answers.stem,
        status=args.batch_status,
        expect_json=_expects_json(args.requests) if args.expect_json is None else args.expect_json,
    )
    run = ShardRun(
        outcome,
        requests=lambda: _lines(args.requests),
        results=lambda: [_lines(p) for p in (args.output, args.errors) if p is not None],
    )
    with pool_that_returns_memory(), _atomic_local(args.dest) as handle, batch_writer(handle, fmt) as writer:
        report = collect_attempt([run], 1, writer, prices=PriceTable.load(args.prices))
    counts = report.counts.to_dict()
    print(" ".join(f"{key}={counts[key]}" for key in RESULT_COUNT_KEYS))
    print(
        f"input_tokens={counts['input_tokens']} output_tokens={counts['output_tokens']} cost_usd={counts['cost_usd']}"
    )
    for found in report.anomalies:
        print(
            f"warning: {found['duplicate_lines']} duplicate line(s), {found['unknown_custom_ids']} unknown "
            f"custom_id(s), {found['unparseable_lines']} unparseable line(s) were counted and not written",
            file=sys.stderr,
        )
    print(f"wrote {report.staged_rows} rows to {args.dest} ({fmt})")
    return 0


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
            except msgspec.DecodeError:
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
