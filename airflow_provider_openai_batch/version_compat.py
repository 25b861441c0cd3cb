"""What differs between the Airflow releases the provider runs on (3.0 to 3.3), said once.

Names that ``apache-airflow-providers-common-compat`` maps are imported from it everywhere; this
module holds only what it does not: the version flags and the few names it has no entry for.
"""

from __future__ import annotations

from airflow import __version__ as _airflow_version
from packaging.version import Version

_RELEASE = Version(Version(_airflow_version).base_version).release

AIRFLOW_V_3_1_PLUS = _RELEASE >= (3, 1)
AIRFLOW_V_3_3_PLUS = _RELEASE >= (3, 3)

try:  # the Task SDK's own exceptions module has it from 3.1 on
    from airflow.sdk.exceptions import TaskDeferralTimeout
except ImportError:
    from airflow.exceptions import TaskDeferralTimeout  # type: ignore[no-redef]

__all__ = ["AIRFLOW_V_3_1_PLUS", "AIRFLOW_V_3_3_PLUS", "TaskDeferralTimeout"]
