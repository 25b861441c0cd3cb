"""One emulator server per test session, reset before each test, driven by the real openai client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from openai import OpenAI

from airflow_provider_openai_batch.emulator import EmulatorServer
from tests.unit.emulator.helpers import FAST, Batches


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(FAST) as server:
        yield server


@pytest.fixture
def server(emulator_server: EmulatorServer) -> EmulatorServer:
    """The shared server with no files or batches and its starting settings."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def client(server: EmulatorServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def batches(client: OpenAI) -> Batches:
    return Batches(client)
