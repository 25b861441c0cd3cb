"""``openai-batch validate`` and ``openai-batch estimate``: check batch input files outside Airflow (CI, scripts).

Paths are local files or fsspec URIs (``s3://...`` with s3fs installed) and are printed as given.
Neither command needs Airflow.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import IO, TextIO

from airflow_provider_openai_batch.core.errors import OpenAIBatchInputError

EXIT_OK, EXIT_PROBLEMS = 0, 1


def _open(path: str) -> contextlib.AbstractContextManager[IO[bytes]]:
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="batch input JSONL files (one job: shards)")
    parser.add_argument(
        "--per-file", action="store_true", help="custom_ids need only be unique within each file, not across them"
    )
    parser.add_argument("--max-problems", type=int, default=100, help="problems listed before a count (default 100)")


def add_estimate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="batch input JSONL files")
    parser.add_argument("--prices", metavar="FILE", help="JSON price overrides on top of the packaged Batch prices")
    parser.add_argument("--max-cost-usd", type=float, help="exit 1 when the total estimated cost is above this")


def run_validate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print every problem as ``path:line: message``; exit 1 on any error (warnings do not fail)."""
    out, err = out or sys.stdout, err or sys.stderr
    from airflow_provider_openai_batch.core.build.input_files import inspect_files

    try:
        report, files = inspect_files(
            list(args.paths), _open, estimate=False, per_file=args.per_file, max_problems=args.max_problems
        )
    except (OSError, OpenAIBatchInputError) as problem:
        print(f"error: {problem}", file=err)
        return EXIT_PROBLEMS
    if report.problems or report.error_count:
        print(report.format(args.max_problems), file=out)
    requests = sum(f.summary.requests for f in files)
    print(
        f"{len(files)} file(s), {requests:,} requests: {report.error_count:,} error(s), "
        f"{report.warning_count:,} warning(s)",
        file=err,
    )
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def run_estimate(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print tokens and cost per file and in total (input counted exactly; output is the ceiling)."""
    out, err = out or sys.stdout, err or sys.stderr
    from airflow_provider_openai_batch.core.build.input_files import LineEstimator
    from airflow_provider_openai_batch.core.costs import PriceTable, check_budget
    from airflow_provider_openai_batch.core.line_blocks import capped_lines

    try:
        prices = PriceTable.load(args.prices)
    except OpenAIBatchInputError as problem:
        print(f"error: {problem}", file=err)
        return EXIT_PROBLEMS
    code = EXIT_OK
    totals = []
    for path in args.paths:
        estimator = LineEstimator()
        try:
            with _open(path) as handle:
                for line in capped_lines(handle):
                    estimator.add(line)
        except OSError as problem:
            print(f"error: {path}: {problem}", file=err)
            code = EXIT_PROBLEMS
            continue
        if not estimator.requests and not estimator.skipped:
            print(f"error: {path}: empty file: no requests to estimate", file=err)
            code = EXIT_PROBLEMS
            continue
        estimate = estimator.estimate(prices)
        totals.append(estimate)
        print(f"{path}: {estimate.describe()}", file=out)
        for number, why in estimator.problems:
            print(f"{path}:{number}: {why}", file=err)
        if estimator.skipped:
            code = EXIT_PROBLEMS
    if len(totals) > 1:
        print(f"total: {_total(totals)}", file=out)
    if args.max_cost_usd is not None and code == EXIT_OK:
        code = _over_budget(totals, args.max_cost_usd, check_budget, err)
    return code


def _total(estimates: Sequence) -> str:
    from airflow_provider_openai_batch.core.costs import Estimate

    total = Estimate.empty()
    for estimate in estimates:
        if estimate.total is not None:
            total += estimate.total
    text = total.describe()
    if not all(e.priced for e in estimates):
        text = text.rsplit(", $", 1)[0] + ", cost unknown (a model has no price; pass --prices FILE)"
    return text


def _over_budget(estimates: Sequence, limit: float, check_budget, err: TextIO) -> int:
    from airflow_provider_openai_batch.core.costs import Estimate

    if not all(e.priced for e in estimates):
        print("error: --max-cost-usd needs a price for every model; pass --prices FILE", file=err)
        return EXIT_PROBLEMS
    total = Estimate.empty()
    for estimate in estimates:
        total += estimate.total
    try:
        check_budget(total, limit)
    except OpenAIBatchInputError as problem:
        print(f"error: {problem}", file=err)
        return EXIT_PROBLEMS
    return EXIT_OK
