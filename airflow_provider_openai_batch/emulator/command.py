"""Command-line entry: ``python -m airflow_provider_openai_batch.emulator`` and ``openai-batch emulator``.

Each knob gets a flag (``--http-429-rate 0.2``); a flag overrides its
``OPENAI_BATCH_EMULATOR_*`` variable, which overrides the built-in default.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from airflow_provider_openai_batch.emulator.server import DEFAULT_HOST, DEFAULT_PORT, serve
from airflow_provider_openai_batch.emulator.settings import (
    EmulatorSettings,
    EmulatorSettingsError,
    knob_help,
    knob_names,
)

_KNOB_DEST = "knob_"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags to ``parser`` (the ``openai-batch emulator`` subcommand reuses this)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port, 0 for any free one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--data-dir", default=None, help="folder for uploaded and result files (default: a temp dir)")
    knobs = parser.add_argument_group("knobs", "each defaults to its OPENAI_BATCH_EMULATOR_<NAME> variable")
    for name, text in knob_help().items():
        flag = "--" + name.replace("_", "-")
        knobs.add_argument(flag, dest=_KNOB_DEST + name, default=None, metavar="VALUE", help=text)


def settings_from_args(args: argparse.Namespace) -> EmulatorSettings:
    given = {name: getattr(args, _KNOB_DEST + name) for name in knob_names()}
    return EmulatorSettings.from_env().merged({k: v for k, v in given.items() if v is not None})


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the process exit code (2 for a bad knob value)."""
    try:
        settings = settings_from_args(args)
    except EmulatorSettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, settings, args.data_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_openai_batch.emulator",
        description="Run the local OpenAI-compatible Batch API emulator.",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
