"""Synchronous registration: all-or-nothing, confirmed, and visible before returning.

``register`` puts every service on the agent, reads each back, rolls the
earlier ones back if a later one fails, then waits (bounded by
``catalog_wait``) until the catalog lists them all — so a caller that returns
"up" is telling the truth to every consumer. ``deregister`` is the mirror
image and keeps going past failures so one bad id never keeps others alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from hooks.consul.client import ConsulClient
from hooks.consul.model import ServiceInstance
from hooks.errors import ConsulError, HookError

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05


class Registrar:
    """Registers and deregisters groups of services through one :class:`ConsulClient`."""

    def __init__(self, client: ConsulClient, *, catalog_wait: float | None = None) -> None:
        self.client = client
        self.catalog_wait = client.config.catalog_wait if catalog_wait is None else catalog_wait

    def register(self, services: Sequence[ServiceInstance]) -> None:
        """Register all of ``services`` or none of them; raise :class:`ConsulError` on failure."""
        done: list[ServiceInstance] = []
        try:
            for service in services:
                self.client.register(service)
                done.append(service)
                self._confirm(service)
                log.info(
                    "registered %s (id %s) at %s:%s",
                    service.name,
                    service.id,
                    service.address,
                    service.port,
                )
        except HookError:
            if done:
                log.warning("rolling back %d service(s) registered before the failure", len(done))
                self.deregister(done, wait=False)
            raise
        self._wait_catalog(services, present=True)

    def deregister(self, services: Sequence[ServiceInstance], *, wait: bool = True) -> list[str]:
        """Deregister every service; return one message per id that could not be removed."""
        failures = []
        for service in services:
            try:
                if self.client.deregister(service.id):
                    log.info("deregistered %s (id %s)", service.name, service.id)
                else:
                    log.info("service id %s was already gone", service.id)
            except ConsulError as exc:
                log.error("%s", exc)
                failures.append(str(exc))
        if wait:
            self._wait_catalog(services, present=False)
        return failures

    def _confirm(self, service: ServiceInstance) -> None:
        seen = self.client.service(service.id)
        if seen is None or seen.get("Port") != service.port:
            raise ConsulError(
                f"Consul accepted service id {service.id} but does not list it on read-back"
            )

    def _wait_catalog(self, services: Sequence[ServiceInstance], *, present: bool) -> None:
        """Wait until the catalog agrees with what we just did, at most ``catalog_wait``."""
        if self.catalog_wait <= 0 or not services:
            return
        wanted: dict[str, set[str]] = {}
        for service in services:
            wanted.setdefault(service.name, set()).add(service.id)

        deadline = time.monotonic() + self.catalog_wait

        def settled(name: str, ids: set[str]) -> bool:
            # Each read gets only the time left, so the wait is bounded even if Consul stalls.
            left = max(0.05, deadline - time.monotonic())
            listed = self.client.catalog_ids(name, budget=left)
            return ids <= listed if present else not (ids & listed)

        what = "list" if present else "drop"
        try:
            pending = wait_until(
                lambda: {n: i for n, i in wanted.items() if not settled(n, i)}, self.catalog_wait
            )
        except ConsulError as exc:
            log.warning("cannot confirm the catalog saw the change, going on: %s", exc)
            return
        if pending:
            ids = ", ".join(sorted(i for group in pending.values() for i in group))
            log.warning(
                "the Consul catalog did not %s %s within %gs; going on (agent anti-entropy "
                "will sync it)",
                what,
                ids,
                self.catalog_wait,
            )


def wait_until(pending: Callable[[], dict], timeout: float) -> dict:
    """Call ``pending`` until it returns an empty dict or ``timeout`` passes; return the last."""
    deadline = time.monotonic() + timeout
    left = pending()
    while left and time.monotonic() < deadline:
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        left = pending()
    return left
