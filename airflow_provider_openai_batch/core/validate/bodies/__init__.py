"""Batch input lines and their per-endpoint bodies as strict ``msgspec`` structs.

The structs follow the ``openai`` package's request TypedDicts key for key (a unit test compares
them, so an ``openai`` upgrade that adds or drops a parameter fails loudly); unknown keys and
wrong types are errors. Nothing here imports ``openai`` or Airflow: decoding must stay cheap.
"""

from __future__ import annotations

from airflow_provider_openai_batch.core.validate.bodies.endpoints import RULES_BY_LINE_TYPE, RULES_BY_URL, EndpointRules
from airflow_provider_openai_batch.core.validate.bodies.line import ENVELOPE_KEYS, Line, RequestLine
from airflow_provider_openai_batch.core.validate.bodies.schemas import SchemaChecker

# The ``openai`` release whose request TypedDicts the structs follow; an older installed ``openai``
# only lacks types for newer parameters (the service accepts them all the same).
FOLLOWS_OPENAI = "3.57.0"

__all__ = [
    "ENVELOPE_KEYS",
    "FOLLOWS_OPENAI",
    "RULES_BY_LINE_TYPE",
    "RULES_BY_URL",
    "EndpointRules",
    "Line",
    "RequestLine",
    "SchemaChecker",
]
