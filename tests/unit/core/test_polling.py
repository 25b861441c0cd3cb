from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_provider_openai_batch.core.polling import PollPolicy, Progress, token_limited


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
