"""How a job uses the answer cache: its mode and the oldest answer it accepts, checked when the DAG is parsed."""

from __future__ import annotations

from datetime import timedelta
from typing import Final, Literal, get_args

CacheMode = Literal["read-write", "read-only", "refresh"]
MODES: Final = get_args(CacheMode)


def check_mode(mode: str) -> CacheMode:
    """``read-write``: use and add answers; ``read-only``: use, never add; ``refresh``: never use, add."""
    if mode not in MODES:
        raise ValueError(f"cache_mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def max_age_seconds(value: timedelta | float | None) -> float | None:
    """``cache_max_age`` as seconds (a ``timedelta`` or a number of seconds); ``None``: any age."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"cache_max_age must be positive; got {value!r}")
    return seconds


def reads(mode: str) -> bool:
    return mode != "refresh"


def writes(mode: str) -> bool:
    return mode != "read-only"
