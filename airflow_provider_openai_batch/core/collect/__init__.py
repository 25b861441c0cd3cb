"""Collecting: output and error lines back to one row per request, by ``custom_id``.

Reconciliation, the result columns, the Arrow table and the retry shards of a failed attempt
live here; build and validate are not imported, so a results task never loads them.
"""
