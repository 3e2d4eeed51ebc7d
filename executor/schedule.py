"""The kill schedule: how long each step of a stop sequence may take.

A KILL gives the propagation delay and the kill grace period as configured; a
SHUTDOWN must fit the whole sequence inside the agent's shutdown grace period, so
:func:`fit_budget` shortens both (in proportion) when they cannot fit, and
:class:`KillSchedule` can be tightened by a SHUTDOWN that arrives midway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

#: time kept free at the end of a SHUTDOWN for TASK_KILLED and its acknowledgement
SHUTDOWN_MARGIN = 1.0
#: at most this much of a SHUTDOWN budget goes to deregistration
DEREGISTER_RESERVE = 1.0


def fit_budget(
    budget: float, delay: float, grace: float, *, deregister: bool
) -> tuple[float, float, float]:
    """Split ``budget`` seconds into (deregistration, delay, grace).

    When delay and grace fit beside a deregistration reserve (a quarter of the budget, at
    most ``DEREGISTER_RESERVE``), they are kept and deregistration gets all the slack;
    otherwise both are shortened in proportion to fill what the reserve leaves.
    """
    budget = max(0.0, budget)
    reserve = min(DEREGISTER_RESERVE, budget / 4) if deregister else 0.0
    room = budget - reserve
    if delay + grace <= room:
        return budget - delay - grace, delay, grace
    scale = room / (delay + grace)
    return reserve, delay * scale, grace * scale


class KillSchedule:
    """When each step of a stop sequence ends; a SHUTDOWN deadline can tighten it midway.

    Times are ``time.monotonic()`` values. Mutated only under the lifecycle's ``_cond``.
    """

    def __init__(self, delay: float, grace: float) -> None:
        self.delay = delay
        self.grace = grace
        #: None: Consul's own retry deadline; else the seconds deregistration may take
        self.deregister_budget: float | None = None
        self.deadline: float | None = None
        self.delay_end: float | None = None
        self.grace_end: float | None = None

    def start_delay(self, now: float) -> float:
        self.delay_end = now + self.delay
        return self.delay

    def start_grace(self, now: float) -> float:
        self.grace_end = now + self.grace
        if self.deadline is not None:
            self.grace_end = min(self.grace_end, self.deadline - SHUTDOWN_MARGIN)
        return max(0.0, self.grace_end - now)

    def tighten(self, deadline: float, now: float) -> str | None:
        """Make every remaining step end by ``deadline`` minus the margin; return a warning
        with the numbers when the configured delay and grace had to be shortened."""
        if self.deadline is not None and self.deadline <= deadline:
            return None
        self.deadline = deadline
        budget = deadline - SHUTDOWN_MARGIN - now
        if self.grace_end is not None:  # already in the grace period
            if self.grace_end <= deadline - SHUTDOWN_MARGIN:
                return None
            self.grace_end = deadline - SHUTDOWN_MARGIN
            return f"the shutdown grace period cuts the kill grace period to {secs(budget)}"
        in_delay = self.delay_end is not None
        delay = max(0.0, self.delay_end - now) if self.delay_end is not None else self.delay
        grace = self.grace
        reserve, new_delay, new_grace = fit_budget(budget, delay, grace, deregister=not in_delay)
        if not in_delay:
            self.deregister_budget = reserve
        if (new_delay, new_grace) == (delay, grace):
            return None
        if in_delay:
            self.delay_end = now + new_delay
        else:
            self.delay = new_delay
        self.grace = new_grace
        return (
            f"the shutdown grace period leaves {secs(budget)} (after a {secs(SHUTDOWN_MARGIN)} "
            f"margin for TASK_KILLED): propagation delay {secs(delay)} + kill grace period "
            f"{secs(grace)} do not fit, shortened to {secs(new_delay)} + {secs(new_grace)}"
        )


def secs(seconds: float) -> str:
    """``seconds`` for a log line: ``1.5s``."""
    return f"{round(max(0.0, seconds), 3):g}s"


def grace_from_policy(policy: Mapping | None) -> float | None:
    """Seconds from a ``KillPolicy`` (``{"grace_period": {"nanoseconds": N}}``), if it has one."""
    if not policy:
        return None
    raw = (policy.get("grace_period") or {}).get("nanoseconds")
    if raw is None:
        return None
    try:
        return max(0.0, int(raw) / 1e9)
    except (TypeError, ValueError):
        log.warning("ignoring kill_policy grace period %r: not a number of nanoseconds", raw)
        return None
