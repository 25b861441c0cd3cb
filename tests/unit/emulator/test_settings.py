"""Knobs from env vars, CLI flags and the admin endpoints, and the ``python -m`` entry point."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from airflow_provider_openai_batch.emulator import (
    EmulatorServer,
    EmulatorSettings,
    EmulatorSettingsError,
    add_arguments,
)
from airflow_provider_openai_batch.emulator.command import settings_from_args
from tests.http_lib import http_lib


def test_from_env_reads_prefixed_variables():
    settings = EmulatorSettings.from_env(
        {
            "OPENAI_BATCH_EMULATOR_SEED": "7",
            "OPENAI_BATCH_EMULATOR_HTTP_429_RATE": "0.25",
            "OPENAI_BATCH_EMULATOR_EXPIRE_AFTER_REQUESTS": "3",
            "OPENAI_BATCH_EMULATOR_API_KEY": "sk-x",
            "UNRELATED": "1",
        }
    )

    assert (settings.seed, settings.http_429_rate, settings.expire_after_requests) == (7, 0.25, 3)
    assert settings.api_key == "sk-x"
    assert settings.validating_seconds == EmulatorSettings().validating_seconds


@pytest.mark.parametrize(
    "changes",
    [
        {"http_429_rate": 1.5},
        {"validating_seconds": -1},
        {"seed": "abc"},
        {"nope": 1},
        {"http_429_rate": 0.6, "http_500_rate": 0.6},
    ],
)
def test_bad_values_are_refused_with_the_knob_named(changes):
    with pytest.raises(EmulatorSettingsError) as raised:
        EmulatorSettings().merged(changes)

    assert next(iter(changes)) in str(raised.value)


def test_none_clears_an_optional_knob():
    assert (
        EmulatorSettings(expire_after_requests=3).merged({"expire_after_requests": "none"}).expire_after_requests
        is None
    )


def test_cli_flags_override_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BATCH_EMULATOR_SEED", "5")
    monkeypatch.setenv("OPENAI_BATCH_EMULATOR_IN_PROGRESS_SECONDS", "2")
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    args = parser.parse_args(["--port", "9999", "--seed", "9", "--request-failure-rate", "0.1"])
    settings = settings_from_args(args)

    assert args.port == 9999
    assert (settings.seed, settings.request_failure_rate, settings.in_progress_seconds) == (9, 0.1, 2.0)


def test_admin_endpoints_change_and_reset_settings_of_a_running_server(server: EmulatorServer):
    with http_lib.Client(base_url=server.url) as http:
        changed = http.post("/_emulator/settings", json={"http_500_rate": 0.5, "seed": 4}).json()
        current = http.get("/_emulator/settings").json()
        refused = http.post("/_emulator/settings", json={"http_500_rate": 2})
        reset = http.post("/_emulator/reset").json()

    assert changed["http_500_rate"] == current["http_500_rate"] == 0.5
    assert server.settings.seed == 0 and reset["http_500_rate"] == 0.0
    assert refused.status_code == 400 and "http_500_rate" in refused.json()["error"]["message"]


def test_update_settings_in_process(server: EmulatorServer):
    updated = server.update_settings(in_progress_seconds=1.5)

    assert updated.in_progress_seconds == server.settings.in_progress_seconds == 1.5


def test_python_dash_m_serves_and_prints_the_base_url(tmp_path):
    command = [
        sys.executable,
        "-m",
        "airflow_provider_openai_batch.emulator",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline().strip() if process.stdout else ""
        base_url = line.rsplit(" ", 1)[-1]
        health = http_lib.get(base_url.removesuffix("/v1") + "/_emulator/health", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert line.startswith("OpenAI Batch API emulator listening on http://127.0.0.1:")
    assert base_url.endswith("/v1")
    assert health.json() == {"status": "ok"}


def test_server_stops_cleanly_and_frees_its_port():
    with EmulatorServer() as server:
        url = server.url
        assert http_lib.get(f"{url}/_emulator/health").status_code == 200
    time.sleep(0.05)

    with pytest.raises(http_lib.ConnectError):
        http_lib.get(f"{url}/_emulator/health", timeout=1)
