"""The retry policy for Consul calls, composed from tenacity's named parts.

Retry only what can heal by itself — a refused or dropped connection, a timeout,
a 5xx (no leader, agent restarting) — with jittered exponential back-off, and
never past the call's deadline. A 4xx is Consul's final answer and fails at once.
"""

from __future__ import annotations

import logging

import requests
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_before_delay,
    wait_random_exponential,
)

from hooks.errors import ConsulError

log = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConsulError):
        return exc.status is not None and exc.status >= 500
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _log_retry(state) -> None:
    exc = state.outcome.exception()
    log.warning("Consul call failed (%s), retrying in %.2fs", _short(exc), state.next_action.sleep)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ConsulError):
        return str(exc)
    return type(exc).__name__


def policy(deadline: float) -> Retrying:
    """Retry transient failures with jittered back-off (50 ms up to 2 s) within ``deadline``."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_random_exponential(multiplier=0.05, max=2.0),
        stop=stop_before_delay(deadline) | stop_after_delay(deadline),
        before_sleep=_log_retry,
        reraise=True,
    )
