"""A local OpenAI-compatible Batch API (Files + Batches) for tests, demos and offline DAG runs.

It imports nothing from Airflow: it is part of the provider's core and runs wherever the
``openai`` client does. Batches go through the real lifecycle with timestamps, fail on the same
file problems as the service, expire and cancel with partial results, and answer every request
deterministically with bodies the official ``openai`` models parse. Faults (HTTP 429/500,
per-request failures, expiry) are knobs of ``EmulatorSettings``.

    with EmulatorServer(EmulatorSettings(in_progress_seconds=0)) as server:
        client = OpenAI(base_url=server.base_url, api_key="anything")
"""

from __future__ import annotations

from airflow_provider_openai_batch.emulator.app import create_app
from airflow_provider_openai_batch.emulator.command import add_arguments, run_from_args
from airflow_provider_openai_batch.emulator.server import EmulatorServer, serve
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings, EmulatorSettingsError

__all__ = [
    "EmulatorServer",
    "EmulatorSettings",
    "EmulatorSettingsError",
    "add_arguments",
    "create_app",
    "run_from_args",
    "serve",
]
