"""Names that become storage keys: made safe so user values can never escape a destination prefix.

They must also stay apart: a job id names the shard folder, the results object and the rows a
rerun replaces, so two different ids mapping to one name would overwrite each other's data. When
anything had to be replaced or cut, a hash of the whole original is appended.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
HASH_CHARS = 12


def safe_name(value: str, max_length: int = 200) -> str:
    """
    ``value`` itself when it is made of letters, digits and ``_ . -`` only (not starting or ending
    with ``.``/``_``) and fits; else a readable prefix of it plus ``-`` and 12 hex of its sha256.

    Applying it to its own result changes nothing, so every layer may call it.
    """
    cleaned = _UNSAFE.sub("_", value).strip("._") or "_"
    if cleaned == value and len(value) <= max_length:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:HASH_CHARS]
    prefix = cleaned[: max_length - HASH_CHARS - 1].rstrip("._-")
    return f"{prefix}-{digest}" if prefix else digest
