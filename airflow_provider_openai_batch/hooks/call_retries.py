"""The provider's own bounded retries around the calls a task cannot afford to lose.

The ``openai`` client retries twice by default, which a busy hour of 429s and 5xx outlasts; and
it cannot resume a download cut off halfway, since by then the body is the caller's. So uploads,
status reads and downloads go through a client with its retries off, under this policy: more
attempts, exponential backoff capped per wait, the server's ``retry-after`` honoured, and one log
line per retry naming the call and the failure's kind (never its text, which may quote headers).

Batch creates are *not* retried here: a create whose reply was lost may have made a batch, so
``operators/batch_lifecycle.py`` looks the batch up by its idempotency key before creating again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

T = TypeVar("T")


def _transport_errors() -> tuple[type[Exception], ...]:
    """What a reset raises mid-body: openai 3.x streams through ``httpx2``, 2.x through ``httpx``."""
    found: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


# A status read, an upload or a download that failed this way may well succeed next time: the
# network, throttling, the service's own errors and timeouts. Other 4xx will not heal by waiting.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    *_transport_errors(),
)

MAX_RETRY_AFTER_SECONDS = 60.0

_LOG = logging.getLogger(__name__)


def describe(error: BaseException) -> str:
    """A failure's kind for logs and messages: ``HTTP 503`` or the exception's class, never its text."""
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if isinstance(status, int) else type(error).__name__


@dataclass(frozen=True)
class CallRetries:
    """
    :param attempts: calls made at most, the first included.
    :param base_delay: the first wait; each further wait doubles, up to ``max_delay``.
    :param max_delay: the longest wait between two attempts (a ``retry-after`` may ask for more,
        up to a minute).
    """

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, failures: int, error: BaseException | None = None) -> float:
        """The wait before the next attempt, after ``failures`` failed ones in a row."""
        asked = _retry_after(error)
        if asked is not None:
            return min(asked, MAX_RETRY_AFTER_SECONDS)
        return min(self.max_delay, self.base_delay * 2 ** (failures - 1))

    def note(self, what: str, error: BaseException, failures: int, log: Any = None) -> float:
        """Log a failed attempt and return the wait before the next; re-raises once attempts are spent."""
        if failures >= self.attempts:
            (log or _LOG).error("%s failed %d times in a row (last: %s); giving up", what, failures, describe(error))
            raise error
        wait = self.delay(failures, error)
        (log or _LOG).warning(
            "%s: %s; retry %d of %d in %.1f s", what, describe(error), failures, self.attempts - 1, wait
        )
        return wait

    def call(self, what: str, fn: Callable[[], T], log: Any = None, sleep: Callable[[float], None] = time.sleep) -> T:
        """``fn()``, called again after each transient failure until it succeeds or attempts run out."""
        failures = 0
        while True:
            try:
                return fn()
            except TRANSIENT_ERRORS as error:
                failures += 1
                sleep(self.note(what, error, failures, log))


def _retry_after(error: BaseException | None) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None
