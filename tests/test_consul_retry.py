"""The retry policy of Consul calls (:mod:`hooks.consul.retry`), without an agent."""

from __future__ import annotations

import sys
import time

import pytest
import requests

from hooks.consul import retry
from hooks.errors import ConsulError


def failing(times: int, exc: Exception):
    """An attempt that raises ``exc`` ``times`` times, then returns ``"ok"``."""
    attempts = []

    def attempt():
        attempts.append(time.monotonic())
        if len(attempts) <= times:
            raise exc
        return "ok"

    return attempt, attempts


def test_the_first_attempt_and_a_final_answer_need_no_tenacity(monkeypatch):
    monkeypatch.setitem(sys.modules, "tenacity", None)  # importing it would now fail
    assert retry.call(lambda: "ok", time.monotonic() + 1) == "ok"
    refused, attempts = failing(1, ConsulError("Consul refused: 403", status=403))
    with pytest.raises(ConsulError, match="403"):
        retry.call(refused, time.monotonic() + 1)
    assert len(attempts) == 1


def test_transient_failures_are_retried_with_a_logged_back_off(caplog):
    flaky, attempts = failing(2, ConsulError("Consul refused: 500 No cluster leader", status=500))
    assert retry.call(flaky, time.monotonic() + 5) == "ok"
    assert len(attempts) == 3
    assert caplog.text.count("500 No cluster leader), retrying in") == 2


def test_retries_end_at_the_deadline_with_the_last_failure():
    started = time.monotonic()
    down, attempts = failing(1000, requests.ConnectionError("Connection refused"))
    with pytest.raises(requests.ConnectionError):
        retry.call(down, started + 0.5)
    assert len(attempts) >= 3
    # It gives up when the next back-off would pass the deadline, so never after it.
    assert attempts[-1] < started + 0.5
    assert time.monotonic() - started < 0.5 + 0.25  # (slack for a busy machine)
