"""What an answer is keyed on: the endpoint and the request body in canonical JSON, never the custom_id.

The same request made by another record, run or DAG gets the same key. Canonical means the body
decoded and encoded again with sorted keys, so the order a DAG wrote its parameters in does not
matter; everything else in the body does (model, messages, every parameter). The key is a sha256;
its first 63 bits (``k64``) order the store's parts and partition lookups.
"""

from __future__ import annotations

import array
import hashlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

KEY_VERSION: Final = b"openai-batch-answer/1\n"
# Endpoints whose answers do not vary from one call to the next.
_FIXED_ENDPOINTS: Final = frozenset({"/v1/embeddings", "/v1/moderations"})


class _Line(msgspec.Struct):
    custom_id: str
    url: str
    body: msgspec.Raw


_decode_lines = msgspec.json.Decoder(list[_Line]).decode
_decode_any = msgspec.json.Decoder().decode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode


def key_prefix(url: str) -> bytes:
    """What every key's hashed text starts with: the key format's version and the endpoint."""
    return KEY_VERSION + url.encode() + b"\n"


def answer_key(url: str, body: Any) -> bytes:
    """The key of one request (``body`` as decoded JSON)."""
    return hashlib.sha256(key_prefix(url) + _encode_sorted(body)).digest()


def line_keys(lines: Sequence[bytes]) -> list[bytes]:
    """The keys of request lines (``{"custom_id", "method", "url", "body"}``), decoded in one call."""
    return keyed_lines(lines)[1]


def keyed_lines(lines: Sequence[bytes]) -> tuple[list[str], list[bytes]]:
    """The custom ids and keys of request lines (blank lines skipped)."""
    lines = [line for line in lines if line.strip()]
    if not lines:
        return [], []
    parsed = _decode_lines(b"[" + b",".join(lines) + b"]")
    return [line.custom_id for line in parsed], [answer_key(line.url, _decode_any(line.body)) for line in parsed]


def k64(key: bytes) -> int:
    """The key's first 63 bits as a non-negative int64: the order of the store and its partitions."""
    return int.from_bytes(key[:8], "big") >> 1


def k64s(keys: Sequence[bytes]) -> list[int]:
    """:func:`k64` of many keys in a few C calls (the keys are read as one buffer of 64-bit words)."""
    words = array.array("Q", b"".join(keys))
    if sys.byteorder == "little":
        words.byteswap()  # the key's first 8 bytes, read big-endian
    return [word >> 1 for word in words[::4]]


def nondeterministic(endpoint: str, body: Mapping[str, Any]) -> str | None:
    """Why the same request may get another answer next time (``None``: it should not).

    Sampling (``temperature`` above 0, the APIs' default being 1) varies answers unless a ``seed``
    pins it; ``n`` above 1 asks for several different ones.
    """
    if endpoint in _FIXED_ENDPOINTS:
        return None
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return f"n={n} asks for several different answers"
    temperature = body.get("temperature", 1)
    if (temperature is None or temperature > 0) and body.get("seed") is None:
        shown = "the default temperature (1)" if "temperature" not in body else f"temperature={temperature}"
        return f"{shown} without a seed samples a new answer each time"
    return None
