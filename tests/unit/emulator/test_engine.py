"""The lifecycle state machine on its own, with a hand-driven clock and no HTTP."""

from __future__ import annotations

import io
import json
from pathlib import Path

from airflow_provider_openai_batch.emulator.engine import WINDOW_SECONDS, BatchEngine
from airflow_provider_openai_batch.emulator.params import BatchParams
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings
from airflow_provider_openai_batch.emulator.store import Store
from tests.unit.emulator.helpers import chat_line


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _engine(tmp_path: Path, settings: EmulatorSettings, lines: int = 10) -> tuple[BatchEngine, Clock, str]:
    store = Store(tmp_path)
    text = "".join(json.dumps(chat_line(f"r{i}", f"text {i}")) + "\n" for i in range(lines))
    uploaded = store.save_upload(io.BytesIO(text.encode()), "in.jsonl", "batch", 10**6, None)
    clock = Clock(1_000.0)
    engine = BatchEngine(store, lambda: settings, clock)
    params = BatchParams(uploaded.id, "/v1/chat/completions", "24h", None, None)
    return engine, clock, engine.create(params).id


def test_transitions_carry_the_time_they_were_due_not_the_time_of_the_read(tmp_path: Path):
    settings = EmulatorSettings(validating_seconds=10, in_progress_seconds=20, finalizing_seconds=30)
    engine, clock, batch_id = _engine(tmp_path, settings)

    clock.now = 5_000.0
    batch = engine.get(batch_id)

    assert batch.status == "completed"
    assert (batch.in_progress_at, batch.finalizing_at, batch.completed_at) == (1_010.0, 1_030.0, 1_060.0)


def test_each_state_lasts_its_configured_time(tmp_path: Path):
    settings = EmulatorSettings(validating_seconds=10, in_progress_seconds=20, finalizing_seconds=30)
    engine, clock, batch_id = _engine(tmp_path, settings)
    seen = []

    for now in (1_005, 1_015, 1_035, 1_065):
        clock.now = now
        seen.append(engine.get(batch_id).status)

    assert seen == ["validating", "in_progress", "finalizing", "completed"]


def test_the_24_hour_window_expires_a_slow_batch_with_the_share_it_finished(tmp_path: Path):
    settings = EmulatorSettings(validating_seconds=0, in_progress_seconds=2 * WINDOW_SECONDS)
    engine, clock, batch_id = _engine(tmp_path, settings)

    clock.now = 1_000 + WINDOW_SECONDS + 60
    batch = engine.get(batch_id)

    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at == 1_000 + WINDOW_SECONDS
    assert (batch.outcome.completed, batch.outcome.failed) == (5, 5)
