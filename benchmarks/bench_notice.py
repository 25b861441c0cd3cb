"""How soon a deferred wait notices that its batch ended: the schedule against a fixed 60 s poll.

    .venv/bin/python benchmarks/bench_notice.py [--poll-interval 60] [--no-long]

Each emulator (its own process, one per processing time) completes its batches a chosen number of
seconds after they are created: 4 to 55 s (the first minute), and 90 and 180 s. Each batch is
watched by two ``OpenAIBatchTrigger``s running their ``run()`` on one event loop, as a triggerer
does: one on the schedule (``created_at`` from the deferring task, as the operators pass it) and
one with ``fixed_schedule=True`` and no ``created_at`` (a read at once, then one per interval:
the trigger before the schedule). Each has its own connection, so its own client and status
board. The latency is the time from the batch's completion to the trigger's event; a real
triggerer then spends well under a second handing the event to the scheduler, the same for both.
Prints JSON; not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.airflow_cluster import EmulatorProcess  # noqa: E402

FIRST_MINUTE = (4, 8, 15, 25, 40, 55)  # seconds from creation to completion
LONGER = (90, 180)
BATCHES_PER_TIME = 2
LINE = {
    "custom_id": "a",
    "method": "POST",
    "url": "/v1/chat/completions",
    "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
}


def create(emulator: EmulatorProcess, count: int, seconds: float) -> list[tuple[Any, float]]:
    """``count`` batches, each with the time it completes (its creation, mid-call, plus ``seconds``)."""
    import openai

    client = openai.OpenAI(base_url=emulator.base_url, api_key="sk-emulator")
    uploaded = client.files.create(file=("in.jsonl", (json.dumps(LINE) + "\n").encode()), purpose="batch")
    made = []
    for _ in range(count):
        before = time.time()
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        made.append((batch, (before + time.time()) / 2 + seconds))
    return made


async def notice(trigger: Any, done_at: float) -> float:
    events = trigger.run()
    try:
        event = await events.__anext__()
    finally:
        await events.aclose()
    assert event.payload["status"] == "completed", event.payload
    return time.time() - done_at


async def watch_all(watches: list[tuple[str, float, Any, float]]) -> list[tuple[str, float, float]]:
    latencies = await asyncio.gather(*(notice(trigger, done_at) for _, _, trigger, done_at in watches))
    return [(schedule, seconds, latency) for (schedule, seconds, _, _), latency in zip(watches, latencies, strict=True)]


def summary(found: list[tuple[str, float, float]], schedule: str) -> dict[str, Any]:
    first = [latency for name, seconds, latency in found if name == schedule and seconds <= 60]
    later = [latency / seconds for name, seconds, latency in found if name == schedule and seconds > 60]
    return {
        "median_latency_first_minute_s": round(statistics.median(first), 2),
        "max_latency_first_minute_s": round(max(first), 2),
        **(
            {
                "median_latency_share_later": round(statistics.median(later), 3),
                "max_latency_share_later": round(max(later), 3),
            }
            if later
            else {}
        ),
        "latencies_s": {
            str(int(seconds)): [round(latency, 2) for name, s, latency in found if name == schedule and s == seconds]
            for seconds in sorted({s for name, s, _ in found if name == schedule})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poll-interval", type=float, default=60.0)
    parser.add_argument("--no-long", action="store_true", help="only batches completing within the first minute")
    args = parser.parse_args()

    from airflow_provider_openai_batch.triggers.batch import OpenAIBatchTrigger

    times = FIRST_MINUTE if args.no_long else FIRST_MINUTE + LONGER
    emulators = [
        EmulatorProcess(validating_seconds=0, in_progress_seconds=seconds, finalizing_seconds=0).start()
        for seconds in times
    ]
    try:
        watches = []
        for index, (emulator, seconds) in enumerate(zip(emulators, times, strict=True)):
            # Two clients (the hook shares one per connection settings): two boards, which would
            # otherwise read the batch for both waits at once.
            os.environ[f"AIRFLOW_CONN_NOTICE_{index}_SCHEDULE"] = json.dumps(emulator.connection())
            elsewhere = {**emulator.connection(), "host": emulator.base_url.replace("127.0.0.1", "localhost")}
            os.environ[f"AIRFLOW_CONN_NOTICE_{index}_FIXED"] = json.dumps(elsewhere)
            for batch, done_at in create(emulator, BATCHES_PER_TIME, seconds):
                common = {"batch_id": batch.id, "poll_interval": args.poll_interval}
                watches.append(
                    (
                        "schedule",
                        seconds,
                        OpenAIBatchTrigger(conn_id=f"notice_{index}_schedule", created_at=batch.created_at, **common),
                        done_at,
                    )
                )
                watches.append(
                    (
                        "fixed",
                        seconds,
                        OpenAIBatchTrigger(conn_id=f"notice_{index}_fixed", fixed_schedule=True, **common),
                        done_at,
                    )
                )
        found = asyncio.run(watch_all(watches))
    finally:
        for emulator in emulators:
            emulator.stop()
    result = {
        "poll_interval_s": args.poll_interval,
        "batches": len(watches) // 2,
        "completes_after_s": list(times),
        "schedule": summary(found, "schedule"),
        "fixed": summary(found, "fixed"),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
