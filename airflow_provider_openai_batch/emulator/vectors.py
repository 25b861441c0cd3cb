"""Deterministic unit vectors standing in for embeddings.

The components come from SHAKE-256 of the input text, so the same text always maps to the same
vector on every platform, different texts to (nearly) orthogonal ones, and no numeric library
is needed.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct

DEFAULT_DIMENSIONS = 1536
_MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_HALF_RANGE = 2**31


def default_dimensions(model: str) -> int:
    return _MODEL_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)


def unit_vector(text: str, dimensions: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    values = [number / _HALF_RANGE - 1.0 for number in struct.unpack(f"<{dimensions}I", raw)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def to_base64(vector: list[float]) -> str:
    """The ``encoding_format="base64"`` form: little-endian float32 values, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
