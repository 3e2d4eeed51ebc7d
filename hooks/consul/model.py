"""What gets registered: a :class:`ServiceInstance` and its optional :class:`Check`.

Both are plain immutable values built by the providers (pod → services,
TaskInfo → services) and turned into Consul's JSON by :meth:`ServiceInstance.to_consul`.
Durations are seconds here and Go syntax on the wire.

They are ``NamedTuple`` rather than dataclasses, as are the executor's values:
``dataclasses`` (with the ``inspect`` it imports) would add almost 1 MB to every
idle executor, and there is one per task.
"""

from __future__ import annotations

from typing import NamedTuple

from hooks.durations import go_duration

DEFAULT_DEREGISTER_CRITICAL_AFTER = 15 * 60.0


class Check(NamedTuple):
    """A Consul check: ``kind`` is ``http``, ``tcp`` or ``ttl``.

    ``target`` is the URL (http) or ``host:port`` (tcp); TTL checks have none and
    are passed or failed by whoever registered them. ``status`` is the initial
    status; ``None`` leaves Consul's default (critical until the first pass).
    """

    kind: str
    target: str = ""
    interval: float | None = None
    timeout: float | None = None
    ttl: float | None = None
    deregister_critical_after: float = DEFAULT_DEREGISTER_CRITICAL_AFTER
    status: str | None = None
    method: str | None = None
    tls_skip_verify: bool = False

    @classmethod
    def http(cls, url: str, interval: float, timeout: float, **kw) -> Check:
        return cls("http", url, interval=interval, timeout=timeout, method="GET", **kw)

    @classmethod
    def tcp(cls, address: str, interval: float, timeout: float, **kw) -> Check:
        return cls("tcp", address, interval=interval, timeout=timeout, **kw)

    @classmethod
    def ttl_check(cls, ttl: float, **kw) -> Check:
        return cls("ttl", ttl=ttl, **kw)

    def to_consul(self, check_id: str) -> dict:
        body: dict = {"CheckID": check_id}
        if self.kind == "http":
            body["HTTP"] = self.target
            body["Method"] = self.method or "GET"
            if self.tls_skip_verify:
                body["TLSSkipVerify"] = True
        elif self.kind == "tcp":
            body["TCP"] = self.target
        elif self.kind == "ttl":
            body["TTL"] = go_duration(self.ttl or 0)
        else:
            raise ValueError(f"unknown check kind {self.kind!r}")
        if self.interval is not None:
            body["Interval"] = go_duration(self.interval)
        if self.timeout is not None:
            body["Timeout"] = go_duration(self.timeout)
        if self.status:
            body["Status"] = self.status
        body["DeregisterCriticalServiceAfter"] = go_duration(self.deregister_critical_after)
        return body


class ServiceInstance(NamedTuple):
    """One registration: Consul service ``id`` of ``name`` at ``address:port``."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    check: Check | None = None
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def check_id(self) -> str:
        """The id Consul knows this service's check by (Consul's own default form)."""
        return f"service:{self.id}"

    def with_check(self, check: Check | None) -> ServiceInstance:
        return self._replace(check=check)

    def to_consul(self) -> dict:
        """The body of ``PUT /v1/agent/service/register``."""
        body: dict = {
            "ID": self.id,
            "Name": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "Port": self.port,
        }
        if self.meta:
            body["Meta"] = dict(self.meta)
        if self.check is not None:
            body["Check"] = self.check.to_consul(self.check_id)
        return body
