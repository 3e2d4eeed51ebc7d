"""The retry policy for Consul calls, composed from tenacity's named parts.

Retry only what can heal by itself — a refused or dropped connection, a timeout,
a 5xx (no leader, agent restarting) — with jittered exponential back-off, and
never past the call's deadline. A 4xx is Consul's final answer and fails at once.

The first attempt runs without tenacity: every task has an executor idling in
memory, and tenacity (with the ``concurrent.futures`` it imports) would add over
half a megabyte to each. It is imported on the first transient failure, which is rare.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from hooks.errors import ConsulError

if TYPE_CHECKING:
    from tenacity import Retrying

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConsulError):
        return exc.status is not None and exc.status >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def call(attempt: Callable[[], requests.Response], deadline: float) -> requests.Response:
    """``attempt()``, retried by :func:`policy` on transient failures until the
    ``time.monotonic()`` ``deadline``; the last failure is raised as it is."""
    try:
        return attempt()
    except Exception as exc:
        if not is_transient(exc):
            raise
        first = exc
    # The policy takes over as if it had made the first attempt itself (replayed at
    # once: it logs the failure and backs off) with the time left to the same deadline.
    replay = [first]
    for each in policy(deadline - time.monotonic()):
        with each:
            if replay:
                raise replay.pop()
            return attempt()
    raise AssertionError("unreachable")  # pragma: no cover - Retrying reraises


def _log_retry(state) -> None:
    exc = state.outcome.exception()
    log.warning("Consul call failed (%s), retrying in %.2fs", _short(exc), state.next_action.sleep)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ConsulError):
        return str(exc)
    return type(exc).__name__


def policy(deadline: float) -> Retrying:
    """Retry transient failures with jittered back-off (50 ms up to 2 s) within ``deadline``."""
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_delay,
        stop_before_delay,
        wait_random_exponential,
    )

    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        stop=stop_before_delay(deadline) | stop_after_delay(deadline),
        before_sleep=_log_retry,
        reraise=True,
    )
