"""Names that become storage keys: made safe so user values can never escape a destination prefix."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(value: str, max_length: int = 200) -> str:
    """Replace anything but letters, digits, ``_ . -`` with ``_``; never empty, never ``.``/``..``."""
    cleaned = _UNSAFE.sub("_", value).strip("._") or "_"
    return cleaned[:max_length]
