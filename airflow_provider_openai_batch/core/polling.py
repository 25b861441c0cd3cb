"""The pure wait policy shared by the trigger and the sensor: no I/O, ``now`` is always passed in.

Deadlines are wall-clock epoch seconds so a trigger rebuilt after a triggerer restart keeps the
original deadline (a monotonic clock restarts with the process). For the same reason the read
schedule is a function of the batch itself (its ``created_at``, timestamps and request counts):
a rebuilt trigger reads on the schedule the first one would have kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_openai_batch.core.limits import TERMINAL_STATUSES, TOKEN_LIMIT_EXCEEDED

Decision = Literal["wait", "done", "timeout", "give_up"]

# The read schedule: a batch is read again after a tenth of its age, so a batch that ends early is
# noticed within seconds, and one that ends later waits at most a tenth of its age (~5% of it on
# average) and never more than ``poll_interval``, the ceiling reached from an age of ten intervals
# on. A batch read alone pays for it once: ~30 more reads than a fixed schedule in its first ten
# minutes (at 60 s); on a busy triggerer the status board shares them (triggers/status_board.py).
FIRST_READ_AFTER = 3.0  # seconds: the least time between two reads of one batch
BACKOFF_SHARE = 0.1  # of the batch's age (of its time finalizing, once it finalizes)
# Once request counts move, a read is placed at the completion their rate predicts; if the batch
# is not done by then, the next predicted read waits at least this share of its age, so a rate
# that slows cannot turn the predictions into a read every few seconds.
PREDICTION_SHARE = 0.05


@dataclass(frozen=True)
class PollPolicy:
    """
    :param poll_interval: seconds between two status reads of one batch.
    :param deadline: epoch seconds after which waiting stops (``None``: wait forever).
    :param max_consecutive_errors: transient API failures tolerated in a row before giving up.
    :param fixed: read every ``poll_interval`` instead of on the backing-off schedule (the
        behaviour before it, kept for comparisons).
    """

    poll_interval: float = 60.0
    deadline: float | None = None
    max_consecutive_errors: int = 5
    fixed: bool = False

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

    def read_delay(self, now: float, created_at: float | None, progress: Progress | None = None) -> float:
        """
        Seconds until the next status read of a batch created at ``created_at``, last seen as ``progress``.

        A tenth of the batch's age (of its time finalizing, once it finalizes), at least
        ``FIRST_READ_AFTER`` and at most ``poll_interval``; earlier when the request counts' rate
        predicts the end before that. Never past the deadline.
        """
        delay = self.poll_interval
        if not self.fixed and created_at is not None:
            since = created_at
            if progress is not None and progress.status == "finalizing" and progress.finalizing_at:
                since = max(progress.finalizing_at, created_at)
            delay = min(max(BACKOFF_SHARE * (now - since), FIRST_READ_AFTER), self.poll_interval)
            eta = progress.eta_seconds(now) if progress is not None and 0 < progress.done < progress.total else None
            if eta is not None:
                delay = min(delay, max(eta, PREDICTION_SHARE * (now - created_at), FIRST_READ_AFTER))
        return self._before_deadline(now, delay)

    def sleep_for(self, now: float, consecutive_errors: int = 0, delay: float | None = None) -> float:
        """Back off on errors (doubling ``delay``, capped at 5 intervals) and never sleep past the deadline."""
        base = self.poll_interval if delay is None else delay
        return self._before_deadline(now, min(base * 2**consecutive_errors, 5 * self.poll_interval))

    def _before_deadline(self, now: float, delay: float) -> float:
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
    finalizing_at: float | None = None

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
            finalizing_at=getattr(batch, "finalizing_at", None),
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
