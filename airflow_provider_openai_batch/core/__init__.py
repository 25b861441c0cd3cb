"""The provider's core: what building, validation and collection share (limits, costs, tokens, shards, hand-offs).

Nothing under ``core`` imports Airflow (a test enforces it), so the same code serves the
operators, the ``openai-batch`` CLI and the emulator, and can be tested without a scheduler.
"""
