"""What differs between the Airflow releases the provider runs on (3.0 to 3.3), said once.

Names that ``apache-airflow-providers-common-compat`` maps are imported from it everywhere; this
module holds only what it does not: the version flags and the few names it has no entry for.
"""

from __future__ import annotations

from typing import Any

from airflow import __version__ as _airflow_version
from packaging.version import Version

_RELEASE = Version(Version(_airflow_version).base_version).release

AIRFLOW_V_3_1_PLUS = _RELEASE >= (3, 1)
AIRFLOW_V_3_3_PLUS = _RELEASE >= (3, 3)


def fallbacks() -> list[str]:
    """What this Airflow lacks that the provider would use, and what it does instead."""
    found = []
    if not AIRFLOW_V_3_3_PLUS:
        found.append("no task state store: a retry re-attaches to its batch by idempotency key alone")
        found.append(
            "no BaseTrigger.on_kill: marking a deferred task failed leaves its batch running "
            "(a retry re-attaches to it; wait_timeout still cancels it)"
        )
    if not AIRFLOW_V_3_1_PLUS:
        found.append("no external_views: the batches page is served at /openai-batches/ but not linked in the UI")
        found.append(
            "a task process killed by a signal (OOM, SIGKILL) fails without its retries (apache/airflow#55753): "
            "clear it, and the new try re-attaches to its batch"
        )
    return found


_logged = False


def log_fallbacks(log: Any) -> None:
    """Say once per process which fallbacks are in effect, so a task log explains itself."""
    global _logged
    if _logged:
        return
    _logged = True
    for note in fallbacks():
        log.info("Airflow %s: %s", _airflow_version, note)


__all__ = ["AIRFLOW_V_3_1_PLUS", "AIRFLOW_V_3_3_PLUS", "fallbacks", "log_fallbacks"]
