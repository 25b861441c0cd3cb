"""Errors raised before anything is uploaded or billed.

They share one base (a ``ValueError``) so callers can catch "the input is wrong" apart from API
or infrastructure failures; each message says what is wrong, where, and how to fix it.
"""

from __future__ import annotations


class OpenAIBatchInputError(ValueError):
    """The batch input (records, templates, JSONL, limits or budget) is not acceptable."""
