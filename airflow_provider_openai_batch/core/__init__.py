"""The provider's core: request building, validation, costs and reconciliation.

Nothing under ``core`` imports Airflow (a test enforces it), so the same code serves the
operators, the ``openai-batch`` CLI and the emulator, and can be tested without a scheduler.
"""
