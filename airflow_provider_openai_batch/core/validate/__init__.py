"""Validating request lines against what the Batch API accepts, before anything is uploaded or billed.

Bodies are decoded into typed structs per endpoint (``bodies``); problems are reported by
file:line and ``custom_id``. Nothing here writes a shard or reads a result.
"""
