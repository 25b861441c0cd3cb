"""``python -m airflow_provider_openai_batch.emulator --port 8765``: run the emulator."""

from __future__ import annotations

import sys

from airflow_provider_openai_batch.emulator.command import main

if __name__ == "__main__":
    sys.exit(main())
