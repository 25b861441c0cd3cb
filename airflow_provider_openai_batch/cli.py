"""``openai-batch``: the provider's tools for use outside Airflow (CI checks, offline tests, scripts).

Subcommands import their module only when chosen, so ``openai-batch validate`` starts fast and
none of them needs Airflow.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _emulator(parser: argparse.ArgumentParser) -> None:
    from airflow_provider_openai_batch.emulator import add_arguments

    add_arguments(parser)


def _run_emulator(args: argparse.Namespace) -> int:
    from airflow_provider_openai_batch.emulator import run_from_args

    return run_from_args(args)


def _add_input_commands(commands: argparse._SubParsersAction) -> None:
    from airflow_provider_openai_batch import input_cli  # light: its work is imported when run

    validate = commands.add_parser("validate", help="check batch input JSONL; path:line: message, exit 1 on errors")
    input_cli.add_validate_arguments(validate)
    validate.set_defaults(handler=input_cli.run_validate)
    estimate = commands.add_parser("estimate", help="tokens and cost of batch input JSONL, per file and in total")
    input_cli.add_estimate_arguments(estimate)
    estimate.set_defaults(handler=input_cli.run_estimate)


def _add_reconcile_command(commands: argparse._SubParsersAction) -> None:
    from airflow_provider_openai_batch import results_cli  # light: its work is imported when run

    reconcile = commands.add_parser(
        "reconcile", help="join a batch's output/error files to its requests: one row per request, Parquet or JSONL"
    )
    results_cli.add_reconcile_arguments(reconcile)
    reconcile.set_defaults(handler=results_cli.run_reconcile)


def _add_cache_command(commands: argparse._SubParsersAction) -> None:
    from airflow_provider_openai_batch import cache_cli  # light: its work is imported when run

    cache = commands.add_parser("cache", help="the answer cache: stats, or evict entries by model or age")
    cache_cli.add_arguments(cache)
    cache.set_defaults(handler=cache_cli.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openai-batch", description="OpenAI Batch API tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser(
        "emulator", help="run the local OpenAI-compatible Batch API server (loopback by default)"
    )
    _emulator(emulator)
    emulator.set_defaults(handler=_run_emulator)
    _add_input_commands(commands)
    _add_reconcile_command(commands)
    _add_cache_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
