"""Injected HTTP 429 and 500 answers, drawn from a seeded RNG so a test run is repeatable.

The RNG is re-seeded whenever the settings change, so the sequence a test sees depends only on
the seed it set and the calls it made after, not on what ran before it.
"""

from __future__ import annotations

import math
import random
import threading

from airflow_provider_openai_batch.emulator.errors import EmulatorAPIError
from airflow_provider_openai_batch.emulator.settings import EmulatorSettings


class FaultInjector:
    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def draw(self, settings: EmulatorSettings) -> EmulatorAPIError | None:
        """The error to answer this API call with, or None to serve it normally."""
        if settings.http_429_rate <= 0 and settings.http_500_rate <= 0:
            return None
        with self._lock:
            roll = self._rng.random()
        if roll < settings.http_429_rate:
            return _error(429, _RATE_LIMITED, "requests", "rate_limit_exceeded", settings)
        if roll < settings.http_429_rate + settings.http_500_rate:
            return _error(500, _SERVER_ERROR, "server_error", None, settings)
        return None


_RATE_LIMITED = "Rate limit reached for requests (emulated by http_429_rate). Please try again shortly."
_SERVER_ERROR = "The server had an error while processing your request (emulated by http_500_rate)."


def _error(status: int, message: str, type: str, code: str | None, settings: EmulatorSettings) -> EmulatorAPIError:
    seconds = settings.retry_after_seconds
    headers = {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}
    return EmulatorAPIError(status, message, type=type, code=code, headers=headers)
