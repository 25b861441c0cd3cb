"""One running emulator: its live settings, store, batch engine and fault injector.

The app's routes and ``EmulatorServer`` both act on this object, so a test can change a knob
in-process or over HTTP and see the same effect.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch.emulator.engine import BatchEngine
from airflow_provider_openai_batch.emulator.faults import FaultInjector
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings
from airflow_provider_openai_batch.emulator.store import Store


class EmulatorRuntime:
    """Live settings plus state; ``data_dir`` defaults to a temporary folder removed by ``close``."""

    def __init__(self, settings: EmulatorSettings, data_dir: str | Path | None = None) -> None:
        self._initial = settings
        self._settings = settings
        self._lock = threading.Lock()
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="openai-batch-emulator-")
            data_dir = self._temp.name
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir)
        self.engine = BatchEngine(self.store, lambda: self.settings)
        self.faults = FaultInjector(settings.seed)

    @property
    def settings(self) -> EmulatorSettings:
        return self._settings

    def update_settings(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """Merge ``changes`` into the live settings (validated as a whole) and re-seed the faults."""
        with self._lock:
            self._settings = self._settings.merged(changes)
            self.faults.reseed(self._settings.seed)
            return self._settings

    def take(self, knob: str) -> bool:
        """Spend one shot of a counting fault knob; False when it is not (or no longer) armed."""
        with self._lock:
            left = getattr(self._settings, knob)
            if left <= 0:
                return False
            self._settings = dataclasses.replace(self._settings, **{knob: left - 1})
            return True

    def reset(self) -> None:
        """Forget all files and batches and go back to the settings the emulator started with."""
        with self._lock:
            self.store.clear()
            self._settings = self._initial
            self.faults.reseed(self._initial.seed)

    def close(self) -> None:
        if self._temp is not None:
            self._temp.cleanup()
