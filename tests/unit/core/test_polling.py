from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from airflow_provider_openai_batch.core.polling import (
    BACKOFF_SHARE,
    FIRST_READ_AFTER,
    PREDICTION_SHARE,
    PollPolicy,
    Progress,
    token_limited,
)


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_terminal_statuses_end_the_wait(status):
    assert PollPolicy(deadline=100).after_status(status, now=500) == "done"


def test_active_batch_waits_until_the_wall_clock_deadline():
    policy = PollPolicy(poll_interval=10, deadline=100)
    assert policy.after_status("in_progress", now=99) == "wait"
    assert policy.after_status("in_progress", now=100) == "timeout"
    assert PollPolicy(deadline=None).after_status("validating", now=1e12) == "wait"


def test_transient_errors_are_tolerated_up_to_the_budget():
    policy = PollPolicy(max_consecutive_errors=3)
    assert [policy.after_error(n, now=0) for n in (1, 2, 3)] == ["wait", "wait", "give_up"]


def test_sleep_backs_off_on_errors_and_never_passes_the_deadline():
    policy = PollPolicy(poll_interval=10, deadline=1000)
    assert [policy.sleep_for(0, e) for e in (0, 1, 2, 3)] == [10, 20, 40, 50]
    assert policy.sleep_for(now=995) == 5


def test_progress_line_has_counts_percent_and_eta():
    batch = SimpleNamespace(
        id="batch_1",
        status="in_progress",
        in_progress_at=1000,
        request_counts=SimpleNamespace(completed=20, failed=5, total=100),
    )
    line = Progress.from_batch(batch).line(now=1050)
    assert line == "batch batch_1: in_progress, 20 completed / 5 failed of 100 (25.0%), ETA 2m30s"


def test_progress_without_counts_has_no_eta():
    batch = SimpleNamespace(id="b", status="validating", in_progress_at=None, request_counts=None)
    assert Progress.from_batch(batch).line(now=5).endswith("of 0 (0.0%), ETA unknown")


def test_only_a_pure_token_limit_refusal_calls_for_a_resubmission():
    limit = {"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}
    assert token_limited("failed", [limit])
    assert not token_limited("failed", [limit, {"code": "invalid_json_line", "line": 3}])
    assert not token_limited("failed", [])
    assert not token_limited("completed", [limit])


# -- the read schedule ------------------------------------------------------------------------


def progress(status="in_progress", done=0, total=0, started_at=None, finalizing_at=None) -> Progress:
    return Progress("b", status, done, 0, total, started_at, finalizing_at)


def test_a_young_batch_is_read_within_seconds_and_reads_back_off_to_the_ceiling():
    policy = PollPolicy(poll_interval=60)
    created = 1000.0
    assert policy.read_delay(created + 0.5, created) == FIRST_READ_AFTER
    assert policy.read_delay(created + 40, created) == 40 * BACKOFF_SHARE
    assert policy.read_delay(created + 3600, created) == 60


def test_the_fixed_schedule_and_an_unknown_creation_read_every_interval():
    assert PollPolicy(poll_interval=60, fixed=True).read_delay(1.0, 0.0) == 60
    assert PollPolicy(poll_interval=60).read_delay(1.0, None) == 60


def test_a_finalizing_batch_backs_off_again_from_when_it_began_finalizing():
    policy = PollPolicy(poll_interval=60)
    finalizing = progress("finalizing", 100, 100, started_at=500, finalizing_at=3990)
    assert policy.read_delay(4000, 0.0, finalizing) == max(10 * BACKOFF_SHARE, FIRST_READ_AFTER)
    assert policy.read_delay(4000, 0.0, progress("in_progress", 50, 100, started_at=500)) == 60


def test_moving_counts_bring_the_next_read_to_the_predicted_completion():
    policy = PollPolicy(poll_interval=600)
    # Created at 0, in progress from 100, 92% done at 1100: the rest is predicted ~87 s later,
    # before the backoff's read (a tenth of the age: 110 s).
    assert policy.read_delay(1100, 0.0, progress(done=92, total=100, started_at=100)) == pytest.approx(8 / 0.092)
    # Predicted later than the backoff: the backoff's read comes first.
    assert policy.read_delay(1100, 0.0, progress(done=1, total=100, started_at=100)) == 1100 * BACKOFF_SHARE
    # A prediction that came and went: the next one waits at least a share of the age.
    assert policy.read_delay(1100, 0.0, progress(done=99, total=100, started_at=100)) == 1100 * PREDICTION_SHARE
    # Counts that have not moved, or are all done, predict nothing.
    assert policy.read_delay(1100, 0.0, progress(done=0, total=100, started_at=100)) == 1100 * BACKOFF_SHARE
    assert policy.read_delay(1100, 0.0, progress(done=100, total=100, started_at=100)) == 1100 * BACKOFF_SHARE


def test_no_read_is_scheduled_past_the_deadline():
    assert PollPolicy(poll_interval=60, deadline=1010).read_delay(1005, 0.0) == 5


def reads(policy: PollPolicy, created: float, until: float, first: float) -> list[float]:
    """The read times of a batch that never ends, the first at ``first``."""
    times = [first]
    while times[-1] < until:
        times.append(times[-1] + policy.read_delay(times[-1], created))
    return times


@pytest.mark.parametrize("ends_at", [1, 4, 9, 20, 40, 59, 90, 300, 1800])
def test_an_end_is_noticed_within_a_tenth_of_the_batch_age_and_never_later_than_the_interval(ends_at):
    policy = PollPolicy(poll_interval=60)
    noticed = next(t for t in reads(policy, 0.0, 4000, first=0.5) if t >= ends_at)
    assert noticed - ends_at <= min(max(BACKOFF_SHARE * noticed, FIRST_READ_AFTER), 60)
    if ends_at <= 50:
        assert noticed - ends_at <= 10


def test_after_the_first_minutes_a_batch_is_read_no_more_often_than_every_interval():
    policy = PollPolicy(poll_interval=60)
    backing_off = reads(policy, 0.0, 3600, first=0.5)
    fixed = reads(PollPolicy(poll_interval=60, fixed=True), 0.0, 3600, first=0.5)
    late = [t for t in backing_off if t >= 60 / BACKOFF_SHARE]
    assert all(b - a == pytest.approx(60) for a, b in itertools.pairwise(late))
    # What the fast start costs a batch read alone: a one-off, under 35 reads (a triggerer's board shares them).
    assert len(backing_off) - len(fixed) < 35
