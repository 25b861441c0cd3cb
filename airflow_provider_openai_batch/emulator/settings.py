"""The emulator's knobs: one frozen dataclass, readable from env vars, CLI flags and JSON.

Every knob has a default that keeps tests and demos fast (state times of a few hundredths of a
second, no injected faults). The same coercion serves all three sources so a knob behaves the
same whether it comes from ``OPENAI_BATCH_EMULATOR_SEED=7``, ``--seed 7`` or ``{"seed": 7}``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints

from airflow_provider_openai_batch.core.limits import MAX_REQUESTS_PER_FILE

ENV_PREFIX = "OPENAI_BATCH_EMULATOR_"
ORGANIZATION = "org-emulator"
# What the admin routes show for a required key, and take back as "unchanged".
MASKED_KEY = "***"


def _knob(default: Any, help: str) -> Any:
    """A dataclass field whose help text feeds the CLI flags and the admin endpoint's listing."""
    return dataclasses.field(default=default, metadata={"help": help})


class EmulatorSettingsError(ValueError):
    """A knob got a value it cannot take; the message names the knob and the accepted range."""


@dataclass(frozen=True)
class EmulatorSettings:
    """Timing, fault and limit knobs of the emulator; each field's help text says what it does."""

    validating_seconds: float = _knob(0.05, "seconds a batch stays validating (0: moves on at the next read)")
    in_progress_seconds: float = _knob(0.05, "seconds a batch stays in_progress")
    finalizing_seconds: float = _knob(0.05, "seconds a batch stays finalizing")
    cancelling_seconds: float = _knob(0.05, "seconds a batch stays cancelling")
    http_429_rate: float = _knob(0.0, "share of API calls answered with HTTP 429 (seeded)")
    http_500_rate: float = _knob(0.0, "share of API calls answered with HTTP 500 (seeded)")
    retry_after_seconds: float = _knob(0.05, "retry-after sent with the injected 429/500 errors")
    request_failure_rate: float = _knob(0.0, "share of requests in a batch that fail with a 4xx/5xx line")
    expire_after_requests: int | None = _knob(None, "the batch expires after processing this many requests")
    cancel_completed_fraction: float | None = _knob(
        None, "share of requests done when cancelled (default: share of in_progress time elapsed)"
    )
    enqueued_token_limit: int = _knob(2_000_000, "estimated enqueued tokens allowed per model")
    max_requests_per_file: int = _knob(MAX_REQUESTS_PER_FILE, "requests allowed in one input file")
    seed: int = _knob(0, "seed of every random choice (faults, failures, output order)")
    api_key: str | None = _knob(None, "require this bearer key (default: accept any key)")
    # Connection faults: each counts down, one per matching call, then the emulator serves normally.
    reset_after_create: int = _knob(0, "batch creates committed, then the connection dropped with no reply")
    error_after_create: int = _knob(0, "batch creates committed, then answered with HTTP 500")
    reset_before_upload: int = _knob(0, "file uploads dropped before the file is stored")
    reset_after_upload: int = _knob(0, "file uploads stored, then the connection dropped with no reply")
    reset_status_reads: int = _knob(0, "batch status reads (a batch or the batch list) dropped with no reply")
    cut_downloads: int = _knob(0, "file downloads cut off after cut_download_after_bytes bytes")
    cut_download_after_bytes: int = _knob(1024, "bytes a cut download sends before the connection drops")

    def __post_init__(self) -> None:
        for name, value in self.to_dict().items():
            _check_range(name, value)
        if self.http_429_rate + self.http_500_rate > 1:
            raise EmulatorSettingsError("http_429_rate + http_500_rate must be at most 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        """Read ``OPENAI_BATCH_EMULATOR_<KNOB>`` variables; unset ones keep their default."""
        env = os.environ if environ is None else environ
        found = {name: env[ENV_PREFIX + name.upper()] for name in knob_names() if ENV_PREFIX + name.upper() in env}
        return cls().merged(found)

    def merged(self, changes: Mapping[str, Any]) -> EmulatorSettings:
        """Return a copy with ``changes`` applied; values may be strings (env, flags) or JSON values."""
        unknown = sorted(set(changes) - set(knob_names()))
        if unknown:
            raise EmulatorSettingsError(f"Unknown emulator setting(s) {unknown}; known: {knob_names()}")
        hints = knob_types()
        coerced = {name: coerce(name, hints[name], value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shown(self) -> dict[str, Any]:
        """The knobs as the admin endpoint shows them: a required key is never handed out."""
        return {**self.to_dict(), "api_key": None if self.api_key is None else MASKED_KEY}


def knob_names() -> list[str]:
    return [field.name for field in dataclasses.fields(EmulatorSettings)]


def knob_types() -> dict[str, Any]:
    return get_type_hints(EmulatorSettings)


def knob_help() -> dict[str, str]:
    return {field.name: field.metadata["help"] for field in dataclasses.fields(EmulatorSettings)}


def coerce(name: str, hint: Any, value: Any) -> Any:
    """Turn a string or JSON value into the knob's type; "none" or "" clears an optional knob."""
    optional = type(None) in getattr(hint, "__args__", ())
    base = next((t for t in getattr(hint, "__args__", (hint,)) if t is not type(None)), hint)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise EmulatorSettingsError(f"Emulator setting {name!r} needs a value")
    try:
        if base is int and not (isinstance(value, float) and not value.is_integer()):
            return int(value)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        pass
    raise EmulatorSettingsError(f"Emulator setting {name!r} expects {base.__name__}, got {value!r}")


def _check_range(name: str, value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if (name.endswith("_rate") or name.endswith("_fraction")) and not 0 <= value <= 1:
        raise EmulatorSettingsError(f"Emulator setting {name!r} must be between 0 and 1, got {value}")
    if value < 0:
        raise EmulatorSettingsError(f"Emulator setting {name!r} must not be negative, got {value}")
    if name in ("enqueued_token_limit", "max_requests_per_file") and value < 1:
        raise EmulatorSettingsError(f"Emulator setting {name!r} must be at least 1, got {value}")
