"""The pure wait policy shared by the trigger and the sensor: no I/O, ``now`` is always passed in.

Deadlines are wall-clock epoch seconds so a trigger rebuilt after a triggerer restart keeps the
original deadline (a monotonic clock restarts with the process).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES, TOKEN_LIMIT_EXCEEDED

Decision = Literal["wait", "done", "timeout", "give_up"]


@dataclass(frozen=True)
class PollPolicy:
    """
    :param poll_interval: seconds between two status reads of one batch.
    :param deadline: epoch seconds after which waiting stops (``None``: wait forever).
    :param max_consecutive_errors: transient API failures tolerated in a row before giving up.
    """

    poll_interval: float = 60.0
    deadline: float | None = None
    max_consecutive_errors: int = 5

    def after_status(self, status: str, now: float) -> Decision:
        if status in TERMINAL_STATUSES:
            return "done"
        if self.deadline is not None and now >= self.deadline:
            return "timeout"
        return "wait"

    def after_error(self, consecutive_errors: int, now: float) -> Decision:
        if consecutive_errors >= self.max_consecutive_errors:
            return "give_up"
        if self.deadline is not None and now >= self.deadline:
            return "timeout"
        return "wait"

    def sleep_for(self, now: float, consecutive_errors: int = 0) -> float:
        """Back off on errors (doubling, capped at 5 intervals) and never sleep past the deadline."""
        delay = self.poll_interval * min(2**consecutive_errors, 5)
        if self.deadline is not None:
            delay = min(delay, max(self.deadline - now, 0.0))
        return delay


def token_limited(status: str, errors: Iterable[Mapping[str, Any]]) -> bool:
    """
    True when OpenAI refused a batch only because too many tokens were already enqueued.

    Such a batch never started and was not billed; the same file succeeds once earlier batches of
    the model finish, so it calls for waiting and resubmitting, not for failing the task.
    """
    codes = {error.get("code") for error in errors}
    return status == "failed" and codes == {TOKEN_LIMIT_EXCEEDED}


@dataclass(frozen=True)
class Progress:
    """A batch's progress as one log line: status, counts, percent and an ETA from the rate so far."""

    batch_id: str
    status: str
    completed: int
    failed: int
    total: int
    started_at: float | None

    @classmethod
    def from_batch(cls, batch: Any) -> Progress:
        counts = getattr(batch, "request_counts", None)
        return cls(
            batch_id=batch.id,
            status=batch.status,
            completed=getattr(counts, "completed", 0) or 0,
            failed=getattr(counts, "failed", 0) or 0,
            total=getattr(counts, "total", 0) or 0,
            started_at=getattr(batch, "in_progress_at", None),
        )

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0

    def eta_seconds(self, now: float) -> float | None:
        if not self.started_at or not self.done or not self.total or now <= self.started_at:
            return None
        rate = self.done / (now - self.started_at)
        return max(self.total - self.done, 0) / rate

    def line(self, now: float) -> str:
        eta = self.eta_seconds(now)
        eta_text = "unknown" if eta is None else _duration(eta)
        return (
            f"batch {self.batch_id}: {self.status}, {self.completed} completed / {self.failed} failed "
            f"of {self.total} ({self.percent:.1f}%), ETA {eta_text}"
        )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
