"""A Consul agent double for tests: real HTTP on a loopback port, no Consul needed.

It models the subset of the agent HTTP API described in
``shared/reference/consul-agent-api.md``: service registration with checks that really run,
TTL updates, the critical-service reaper, a catalog that lags behind the agent, ACL tokens with
Consul's plain-text errors, and switches for faults (refused connections, failing or slow
answers, no leader). Typical use::

    with ConsulDouble(acl_token="secret") as consul:
        run_the_hook(env={"CONSUL_HTTP_ADDR": consul.addr, "CONSUL_HTTP_TOKEN": "secret"})
        consul.wait_for(lambda: "web-1" in consul.services())
        assert all("token" not in r.query for r in consul.requests)

Known simplifications: blocking queries (``index``/``wait``) answer at once; ``filter``, ``dc``,
``ns`` and ``stale`` are ignored; reads of the catalog and health endpoints are served even
without a leader; the first probe of an HTTP/TCP check runs at once instead of after a random
stagger, and intervals below 1 s are kept (Consul raises them to 1 s); GRPC, H2PING and UDP
checks are accepted but never probed; Args (script) checks are refused as on an agent with
script checks disabled.

Run ``python -m tests.doubles.consul --port 8500 [--acl-token T]`` for a standalone server.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import http.client
import json
import math
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ConsulDouble", "Recorded"]

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATUSES = (PASSING, WARNING, CRITICAL)

NODE = "double-node"
NODE_ID = "5e1f6c2a-0d0b-4c39-9a41-7d3c1b2e8f10"
NODE_ADDRESS = "127.0.0.1"
DATACENTER = "dc1"
DEFAULT_LEADER = "127.0.0.1:8300"

_TICK = 0.02  # how often the background thread looks for due checks, TTLs and reaping
_OUTPUT_LIMIT = 4096  # Consul keeps at most 4 KiB of check output
_DEFAULT_CHECK_TIMEOUT_NS = 10 * 10**9
_PROBED_KINDS = ("http", "tcp")
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


@dataclass
class Recorded:
    """One HTTP request as the double received it (also failed, refused-by-ACL and 404 ones)."""

    time: float  # time.monotonic() once the request line and headers had arrived
    method: str
    path: str  # without the query, still percent-encoded: /v1/agent/service/deregister/a%2Fb
    query: dict[
        str, list[str]
    ]  # parse_qs with blank values kept: "?passing" gives {"passing": [""]}
    headers: dict[str, str]  # names in the case the client sent them
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON, ``None`` for an empty body; ValueError when it is not JSON."""
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        """The value of header ``name``, compared case-insensitively; ``None`` when absent."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class _ApiError(Exception):
    """An answer with an error status and a plain-text body, the way Consul reports errors."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, headers: dict[str, str] | None = None) -> _Response:
        return cls(status, text.encode(), _TEXT, dict(headers or {}))

    @classmethod
    def json(
        cls, value: Any, *, pretty: bool = False, headers: dict[str, str] | None = None
    ) -> _Response:
        body = json.dumps(value, indent=4 if pretty else None).encode()
        return cls(200, body, _JSON, dict(headers or {}))


# -- Go's duration syntax ----------------------------------------------------------------------

_NS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,  # micro sign
    "\u03bcs": 10**3,  # Greek small mu; Go accepts both spellings
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_DURATION_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def _go_quote(text: str) -> str:
    """Approximately Go's %q, which Consul uses to quote IDs and values in its messages."""
    return json.dumps(text, ensure_ascii=False)


def _parse_go_duration(text: str) -> int:
    """Nanoseconds in a Go duration such as ``1h30m`` or ``300ms``; ValueError when malformed.

    The error message is the one Consul puts after ``Request decode failed: ``.
    """
    negative = text.startswith("-")
    rest = text[1:] if text.startswith(("-", "+")) else text
    if rest == "0":
        return 0
    invalid = ValueError(f"time: invalid duration {_go_quote(text)}")
    if not rest:
        raise invalid
    total, pos = Decimal(0), 0
    while pos < len(rest):
        term = _DURATION_TERM.match(rest, pos)
        if term is None:
            raise invalid
        total += Decimal(term[1]) * _NS_PER_UNIT[term[2]]
        pos = term.end()
    return int(-total if negative else total)


def _format_go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` (``5m0s``, ``1.5s``, ``300ms``): how Consul echoes them."""

    def decimal(value: int, digits: int) -> str:
        whole, fraction = divmod(value, 10**digits)
        fraction_text = f"{fraction:0{digits}d}".rstrip("0")
        return f"{whole}.{fraction_text}" if fraction_text else str(whole)

    if ns == 0:
        return "0s"
    sign, ns = ("-" if ns < 0 else ""), abs(ns)
    if ns < 10**3:
        return f"{sign}{ns}ns"
    if ns < 10**6:
        return f"{sign}{decimal(ns, 3)}\u00b5s"
    if ns < 10**9:
        return f"{sign}{decimal(ns, 6)}ms"
    hours, ns = divmod(ns, 3600 * 10**9)
    minutes, ns = divmod(ns, 60 * 10**9)
    prefix = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{sign}{prefix}{decimal(ns, 9)}s"


# -- request decoding, with Go's error texts ---------------------------------------------------


def _json_kind(value: Any) -> str:
    """Go's word for the JSON type of ``value`` in its unmarshal errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _decode_failed(detail: str) -> _ApiError:
    return _ApiError(400, f"Request decode failed: {detail}")


def _load_object(body: bytes, go_type: str) -> dict[str, Any]:
    """The JSON object in ``body``, or the 400 Consul gives for a body it cannot decode."""
    if not body.strip():
        raise _decode_failed("EOF")  # what Go's JSON decoder reports for an empty body
    try:
        value = json.loads(body)
    except ValueError as err:
        raise _decode_failed(str(err)) from None
    if not isinstance(value, dict):
        raise _decode_failed(
            f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}"
        )
    return value


def _fold(key: str) -> str:
    # Go's JSON decoding matches keys case-insensitively and Consul also accepts snake_case
    # aliases (deregister_critical_service_after), so compare keys lower-cased without "_".
    return key.replace("_", "").lower()


class _Fields:
    """Typed access to one JSON object of a request body, failing with Go's decode errors."""

    def __init__(self, raw: dict[str, Any], struct: str) -> None:
        self._raw = {_fold(key): value for key, value in raw.items()}
        self._struct = struct

    def is_empty(self) -> bool:
        return all(value in (None, "", 0, False, [], {}) for value in self._raw.values())

    def _get(self, name: str, go_type: str, accept: Callable[[Any], bool]) -> Any:
        value = self._raw.get(_fold(name))
        if value is not None and not accept(value):
            raise self._mistyped(name, value, go_type)
        return value  # None (absent or JSON null) leaves Go's zero value

    def _mistyped(self, name: str, value: Any, go_type: str) -> _ApiError:
        return _decode_failed(
            f"json: cannot unmarshal {_json_kind(value)} into Go struct field "
            f"{self._struct}.{name} of type {go_type}"
        )

    def text(self, name: str) -> str:
        return self._get(name, "string", lambda v: isinstance(v, str)) or ""

    def integer(self, name: str, default: int = 0) -> int:
        value = self._get(name, "int", lambda v: isinstance(v, int) and not isinstance(v, bool))
        return default if value is None else value

    def flag(self, name: str) -> bool:
        return bool(self._get(name, "bool", lambda v: isinstance(v, bool)))

    def strings(self, name: str) -> list[str]:
        value = self._get(name, "[]string", lambda v: isinstance(v, list)) or []
        for item in value:
            if not isinstance(item, str):
                raise self._mistyped(name, item, "string")
        return list(value)

    def string_map(self, name: str) -> dict[str, str]:
        value = self._get(name, "map[string]string", lambda v: isinstance(v, dict)) or {}
        for item in value.values():
            if not isinstance(item, str):
                raise self._mistyped(name, item, "string")
        return dict(value)

    def header_map(self, name: str) -> dict[str, list[str]]:
        value = self._get(name, "map[string][]string", lambda v: isinstance(v, dict)) or {}
        for item in value.values():
            if not isinstance(item, list) or not all(isinstance(s, str) for s in item):
                raise self._mistyped(name, item, "[]string")
        return {key: list(values) for key, values in value.items()}

    def duration_ns(self, name: str) -> int:
        value = self._get(
            name,
            "time.Duration",
            lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
        )
        if value is None:
            return 0
        if not isinstance(value, str):
            return int(value)  # Consul reads a JSON number as nanoseconds
        try:
            return _parse_go_duration(value)
        except ValueError as err:
            raise _decode_failed(str(err)) from None

    def obj(self, name: str) -> _Fields | None:
        value = self._get(name, "object", lambda v: isinstance(v, dict))
        return None if value is None else _Fields(value, f"{self._struct}.{name}")

    def objects(self, name: str) -> list[_Fields]:
        value = self._get(name, "array", lambda v: isinstance(v, list)) or []
        for item in value:
            if not isinstance(item, dict):
                raise self._mistyped(name, item, "object")
        return [_Fields(item, f"{self._struct}.{name}") for item in value]


# -- the agent's model -------------------------------------------------------------------------


@dataclass
class _Service:
    service_id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    enable_tag_override: bool
    weights: dict[str, int]

    def view(self) -> dict[str, Any]:
        """The object ``GET /v1/agent/services`` shows for this service."""
        return {
            "ID": self.service_id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Port": self.port,
            "Address": self.address,
            "Weights": dict(self.weights),
            "EnableTagOverride": self.enable_tag_override,
            "Datacenter": DATACENTER,
        }

    def catalog_entry(self) -> dict[str, Any]:
        """The flat entry ``GET /v1/catalog/service/:name`` lists (indexes added on sync)."""
        return {
            "ID": NODE_ID,
            "Node": NODE,
            "Address": NODE_ADDRESS,
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
            "NodeMeta": {},
            "ServiceKind": "",
            "ServiceID": self.service_id,
            "ServiceName": self.name,
            "ServiceTags": list(self.tags),
            "ServiceAddress": self.address,
            "ServiceWeights": dict(self.weights),
            "ServiceMeta": dict(self.meta),
            "ServicePort": self.port,
            "ServiceEnableTagOverride": self.enable_tag_override,
        }


@dataclass
class _Check:
    """One agent check: its definition from the register body, then its live state."""

    check_id: str
    name: str
    kind: str  # "http", "tcp", "ttl"; "grpc", "h2ping", "udp" are kept but never probed
    service_id: str = ""
    notes: str = ""
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    tcp: str = ""
    interval_ns: int = 0
    timeout_ns: int = 0
    ttl_ns: int = 0
    deregister_after_ns: int = 0
    success_before_passing: int = 0
    failures_before_critical: int = 0
    # Live state, changed only under _Agent.lock.
    status: str = CRITICAL
    output: str = ""
    critical_since: float | None = None  # set exactly while status is critical
    next_probe: float = 0.0
    probing: bool = False
    ttl_deadline: float = math.inf
    last_ttl_output: str = ""
    successes: int = 0
    failures: int = 0

    @property
    def timeout(self) -> float:
        return (self.timeout_ns or _DEFAULT_CHECK_TIMEOUT_NS) / 1e9

    def set_status(self, status: str, output: str, now: float) -> None:
        if status != CRITICAL:
            self.critical_since = None
        elif self.status != CRITICAL or self.critical_since is None:
            self.critical_since = now
        self.status, self.output = status, output

    def definition(self) -> dict[str, Any]:
        return {
            "HTTP": self.http,
            "Method": self.method if self.http else "",
            "Header": copy.deepcopy(self.header),
            "Body": self.body,
            "TLSServerName": self.tls_server_name,
            "TLSSkipVerify": self.tls_skip_verify,
            "TCP": self.tcp,
            "TTL": _format_go_duration(self.ttl_ns),
            "Interval": _format_go_duration(self.interval_ns),
            "Timeout": _format_go_duration(self.timeout_ns),
            "DeregisterCriticalServiceAfter": _format_go_duration(self.deregister_after_ns),
        }


def _serf_health() -> dict[str, Any]:
    """The node check every health entry carries; the double's node is always alive."""
    return {
        "Node": NODE,
        "CheckID": "serfHealth",
        "Name": "Serf Health Status",
        "Status": PASSING,
        "Notes": "",
        "Output": "Agent alive and reachable",
        "ServiceID": "",
        "ServiceName": "",
        "ServiceTags": [],
        "Type": "",
        "Definition": {},
    }


def _truncated(output: str) -> str:
    if len(output) <= _OUTPUT_LIMIT:
        return output
    return f"{output[:_OUTPUT_LIMIT]} ... (captured {_OUTPUT_LIMIT} of {len(output)} bytes)"


class _Agent:
    """Agent, catalog and fault state. One lock guards all of it; every method takes it."""

    def __init__(self, catalog_lag: float) -> None:
        self.lock = threading.RLock()
        self.services: dict[str, _Service] = {}
        self.checks: dict[str, _Check] = {}
        self.requests: list[Recorded] = []
        self.registrations: list[dict[str, Any]] = []
        self.deregistrations: list[tuple[float, str]] = []
        self.reaped: list[tuple[float, str]] = []
        self.leader = DEFAULT_LEADER
        self.catalog_lag = catalog_lag
        self.delay = 0.0
        self.failures_left = 0
        self.failure: tuple[int, str] = (500, "")
        # targeted faults: (matches, status, body), each used once
        self.targeted: list[tuple[Callable[[Recorded], bool], int, str]] = []
        self._catalog: dict[str, dict[str, Any]] = {}  # service ID -> flat catalog entry
        # Agent changes not yet synced to the catalog: (when, service ID, entry or None).
        self._unsynced: deque[tuple[float, str, dict[str, Any] | None]] = deque()
        self._index = 1

    # -- writes from the API

    def register(
        self, service: _Service, checks: list[_Check], replace: bool, body: dict[str, Any]
    ) -> None:
        now = time.monotonic()
        with self.lock:
            for check in checks:
                previous = self.checks.get(check.check_id)
                if previous is not None:  # Consul keeps the live status of a re-registered check
                    check.status, check.output = previous.status, previous.output
                    check.critical_since = previous.critical_since
                    check.last_ttl_output = previous.last_ttl_output
                elif check.status == CRITICAL:
                    check.critical_since = now
                if check.kind == "ttl":
                    check.ttl_deadline = now + check.ttl_ns / 1e9
            if replace:
                wanted = {check.check_id for check in checks}
                for stale in [
                    c.check_id
                    for c in self.checks.values()
                    if c.service_id == service.service_id and c.check_id not in wanted
                ]:
                    del self.checks[stale]
            self.checks.update((check.check_id, check) for check in checks)
            self.services[service.service_id] = service
            self.registrations.append(body)
            self._unsynced.append((now, service.service_id, service.catalog_entry()))

    def deregister(self, service_id: str) -> bool:
        """Remove a service on request; False when the agent did not know it."""
        now = time.monotonic()
        with self.lock:
            self.deregistrations.append((now, service_id))
            return self._remove_service(service_id, now)

    def update_ttl(self, check_id: str, status: str, output: str) -> None:
        now = time.monotonic()
        with self.lock:
            check = self.checks.get(check_id)
            if check is None:
                raise _ApiError(
                    404,
                    f"Unknown check ID {_go_quote(check_id)}. "
                    "Ensure that the check ID is passed, not the check name.",
                )
            if check.kind != "ttl":
                raise _ApiError(500, f"CheckID {_go_quote(check_id)} does not have associated TTL")
            output = _truncated(output)
            check.last_ttl_output = output
            check.ttl_deadline = now + check.ttl_ns / 1e9
            check.set_status(status, output, now)

    def take_fault(self, rec: Recorded) -> tuple[float, tuple[int, str] | None]:
        """The delay for the next answer, and the failure it must be instead, if any."""
        with self.lock:
            for fault in self.targeted:
                if fault[0](rec):
                    self.targeted.remove(fault)
                    return self.delay, fault[1:]
            if self.failures_left <= 0:
                return self.delay, None
            self.failures_left -= 1
            return self.delay, self.failure

    # -- reads

    def service_view(self, service_id: str) -> dict[str, Any] | None:
        with self.lock:
            service = self.services.get(service_id)
            return None if service is None else service.view()

    def services_view(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {sid: service.view() for sid, service in self.services.items()}

    def checks_view(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {cid: self._check_view(check) for cid, check in self.checks.items()}

    def catalog_entries(self, name: str, tags: list[str]) -> tuple[int, list[dict[str, Any]]]:
        with self.lock:
            self.sync_catalog()
            entries = [
                copy.deepcopy(entry)
                for _, entry in sorted(self._catalog.items())
                if entry["ServiceName"] == name and all(t in entry["ServiceTags"] for t in tags)
            ]
            return self._index, entries

    def health_entries(
        self, name: str, tags: list[str], passing_only: bool
    ) -> tuple[int, list[dict[str, Any]]]:
        node = {
            "ID": NODE_ID,
            "Node": NODE,
            "Address": NODE_ADDRESS,
            "Datacenter": DATACENTER,
            "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
            "Meta": {},
        }
        entries = []
        with self.lock:
            for sid, service in sorted(self.services.items()):
                if service.name != name or not all(t in service.tags for t in tags):
                    continue
                checks = [_serf_health()] + [
                    self._check_view(c) for c in self.checks.values() if c.service_id == sid
                ]
                if passing_only and any(c["Status"] != PASSING for c in checks):
                    continue
                service_view = service.view()
                del service_view["Datacenter"]
                entries.append({"Node": dict(node), "Service": service_view, "Checks": checks})
            return self._index, entries

    # -- background work (the check runner, TTL timers, reaper, anti-entropy)

    def start_due_probes(self, now: float) -> list[_Check]:
        """Mark the HTTP/TCP checks whose interval has come as probing, and return them."""
        with self.lock:
            due = [
                check
                for check in self.checks.values()
                if check.kind in _PROBED_KINDS and not check.probing and check.next_probe <= now
            ]
            for check in due:
                check.probing = True
            return due

    def finish_probe(self, check: _Check, status: str, output: str) -> None:
        now = time.monotonic()
        with self.lock:
            check.probing = False
            check.next_probe = now + check.interval_ns / 1e9  # Consul waits after each probe
            if self.checks.get(check.check_id) is not check:
                return  # removed or re-registered while the probe ran
            # SuccessBeforePassing / FailuresBeforeCritical: below the threshold nothing changes.
            if status == CRITICAL:
                check.failures, check.successes = check.failures + 1, 0
                reached = check.failures >= check.failures_before_critical
            else:
                check.successes, check.failures = check.successes + 1, 0
                reached = check.successes >= check.success_before_passing
            if reached:
                check.set_status(status, _truncated(output), now)

    def expire_ttls(self, now: float) -> None:
        with self.lock:
            for check in self.checks.values():
                if check.kind == "ttl" and now >= check.ttl_deadline:
                    check.ttl_deadline = math.inf  # the TTL timer fires once per update
                    output = "TTL expired"
                    if check.last_ttl_output:
                        output += f" (last output before timeout follows): {check.last_ttl_output}"
                    check.set_status(CRITICAL, output, now)

    def reap(self, now: float, min_deregister_after: float) -> None:
        with self.lock:
            doomed = {
                check.service_id
                for check in self.checks.values()
                if check.service_id
                and check.deregister_after_ns > 0
                and check.critical_since is not None
                and now - check.critical_since
                > max(check.deregister_after_ns / 1e9, min_deregister_after)
            }
            for service_id in sorted(doomed):
                if self._remove_service(service_id, now):
                    self.reaped.append((now, service_id))

    def sync_catalog(self) -> None:
        """Push to the catalog the agent changes anti-entropy would have synced by now."""
        now = time.monotonic()
        with self.lock:
            if not self.leader:
                return  # syncs fail without a leader; the agent keeps retrying
            while self._unsynced and self._unsynced[0][0] + self.catalog_lag <= now:
                _, service_id, entry = self._unsynced.popleft()
                self._index += 1
                previous = self._catalog.pop(service_id, None)
                if entry is not None:
                    created = previous["CreateIndex"] if previous else self._index
                    self._catalog[service_id] = {
                        **entry,
                        "CreateIndex": created,
                        "ModifyIndex": self._index,
                    }

    # -- helpers, called with the lock held

    def _remove_service(self, service_id: str, now: float) -> bool:
        if self.services.pop(service_id, None) is None:
            return False
        for check_id in [c.check_id for c in self.checks.values() if c.service_id == service_id]:
            del self.checks[check_id]
        self._unsynced.append((now, service_id, None))
        return True

    def _check_view(self, check: _Check) -> dict[str, Any]:
        service = self.services.get(check.service_id)
        return {
            "Node": NODE,
            "CheckID": check.check_id,
            "Name": check.name,
            "Status": check.status,
            "Notes": check.notes,
            "Output": check.output,
            "ServiceID": check.service_id,
            "ServiceName": service.name if service else "",
            "ServiceTags": list(service.tags) if service else [],
            "Type": check.kind,
            "Interval": _format_go_duration(check.interval_ns) if check.interval_ns else "",
            "Timeout": _format_go_duration(check.timeout_ns) if check.timeout_ns else "",
            "ExposedPort": 0,
            "Definition": check.definition(),
            "CreateIndex": 0,
            "ModifyIndex": 0,
        }


# -- registration bodies -----------------------------------------------------------------------

_META_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CHECK_TYPES = ("HTTP", "TCP", "TTL", "Args", "GRPC", "H2PING", "UDP")


def _validate_meta(meta: dict[str, str]) -> None:
    if len(meta) > 64:
        raise _ApiError(
            400, "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
        )
    for key, value in meta.items():
        problem = ""
        if not key:
            problem = "Key cannot be blank"
        elif not _META_KEY.fullmatch(key):
            problem = "Key contains invalid characters"
        elif len(key) > 128:
            problem = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            problem = "Key prefix 'consul-' is reserved for internal use"
        elif len(value) > 512:
            problem = "Value is too long (limit: 512 characters)"
        if problem:
            pair = f"('{key}', '{value}')"
            raise _ApiError(
                400, f"Invalid Service Meta: Couldn't load metadata pair {pair}: {problem}"
            )


def _parse_check(fields: _Fields) -> tuple[_Check, list[str]]:
    """A check from its JSON object (decoding only), and the check types it sets."""
    check = _Check(
        check_id=fields.text("CheckID"),
        name=fields.text("Name"),
        kind="",
        notes=fields.text("Notes"),
        http=fields.text("HTTP"),
        method=fields.text("Method") or "GET",
        header=fields.header_map("Header"),
        body=fields.text("Body"),
        tls_skip_verify=fields.flag("TLSSkipVerify"),
        tls_server_name=fields.text("TLSServerName"),
        tcp=fields.text("TCP"),
        interval_ns=fields.duration_ns("Interval"),
        timeout_ns=fields.duration_ns("Timeout"),
        ttl_ns=fields.duration_ns("TTL"),
        deregister_after_ns=fields.duration_ns("DeregisterCriticalServiceAfter"),
        success_before_passing=fields.integer("SuccessBeforePassing"),
        failures_before_critical=fields.integer("FailuresBeforeCritical"),
        status=fields.text("Status"),
    )
    present = {
        "HTTP": bool(check.http),
        "TCP": bool(check.tcp),
        "TTL": check.ttl_ns > 0,
        "Args": bool(fields.strings("Args") or fields.strings("ScriptArgs")),
        "GRPC": bool(fields.text("GRPC")),
        "H2PING": bool(fields.text("H2PING")),
        "UDP": bool(fields.text("UDP")),
    }
    return check, [name for name in _CHECK_TYPES if present[name]]


def _validate_check(check: _Check, types: list[str]) -> None:
    """Consul's CheckType.Validate(), plus the one-type rule it leaves implicit."""

    def invalid(reason: str) -> _ApiError:
        return _ApiError(400, f"Invalid check: {reason}")

    if len(types) > 1:
        raise invalid(
            "only one of HTTP, TCP, TTL, Args, GRPC, H2PING or UDP may be set, "
            f"got {' and '.join(types)}"
        )
    interval_check = bool(types) and types[0] != "TTL"
    if check.interval_ns > 0 and check.ttl_ns > 0:
        raise invalid("Interval and TTL cannot both be specified")
    if interval_check and check.interval_ns <= 0:
        raise invalid("Interval must be > 0 for Script, HTTP, H2PING, TCP or UDP checks")
    if not types:
        raise invalid("TTL must be > 0 for TTL checks")
    if check.status and check.status not in STATUSES:
        raise _ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
    if types[0] == "Args":
        # A stock agent refuses script checks from the HTTP API, as an internal error.
        raise _ApiError(
            500,
            "Scripts are disabled on this agent from remote calls; "
            "to enable, configure 'enable_script_checks' to true",
        )


def _parse_registration(raw: dict[str, Any]) -> tuple[_Service, list[_Check]]:
    """The service and checks of a register body, validated as Consul does (or _ApiError)."""
    fields = _Fields(raw, "ServiceDefinition")
    weights = fields.obj("Weights")
    service = _Service(
        service_id=fields.text("ID"),
        name=fields.text("Name"),
        tags=fields.strings("Tags"),
        address=fields.text("Address"),
        port=fields.integer("Port"),
        meta=fields.string_map("Meta"),
        enable_tag_override=fields.flag("EnableTagOverride"),
        weights={
            "Passing": weights.integer("Passing", 1) if weights else 1,
            "Warning": weights.integer("Warning", 1) if weights else 1,
        },
    )
    single = fields.obj("Check")
    check_fields = ([single] if single and not single.is_empty() else []) + fields.objects("Checks")
    parsed = [_parse_check(item) for item in check_fields]

    if not service.name:
        raise _ApiError(400, "Missing service name")
    if service.address in ("0.0.0.0", "::", "[::]"):
        raise _ApiError(400, "Invalid service address")
    _validate_meta(service.meta)
    service.service_id = service.service_id or service.name
    checks = []
    for number, (check, types) in enumerate(parsed, start=1):
        _validate_check(check, types)
        check.kind = types[0].lower()
        check.service_id = service.service_id
        check.status = check.status or CRITICAL
        check.name = check.name or f"Service '{service.name}' check"
        if not check.check_id:
            suffix = f":{number}" if len(parsed) > 1 else ""
            check.check_id = f"service:{service.service_id}{suffix}"
        checks.append(check)
    return service, checks


# -- probes ------------------------------------------------------------------------------------


def _describe(err: BaseException) -> str:
    """An OS-level failure in the words Go's net package would use."""
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "i/o timeout"
    if isinstance(err, ConnectionRefusedError):
        return "connect: connection refused"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err)


def _probe_http(check: _Check) -> tuple[str, str]:
    request = urllib.request.Request(
        check.http, data=check.body.encode() or None, method=check.method
    )
    request.add_header("User-Agent", "Consul Health Check")
    request.add_header("Accept", "text/plain, text/*, */*")
    for name, values in check.header.items():
        request.add_header(name, ", ".join(values))
    # Proxies from the environment must not intercept probes of local services.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if check.http.lower().startswith("https:"):
        context = ssl.create_default_context()
        if check.tls_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=check.timeout) as response:
            code, reason, body = response.status, response.reason, response.read()
    except urllib.error.HTTPError as err:
        code, reason, body = err.code, err.reason, err.read()
    except (OSError, ValueError, http.client.HTTPException) as err:
        return CRITICAL, f'{check.method.capitalize()} "{check.http}": {_describe(err)}'
    if 200 <= code < 300:
        status = PASSING
    elif code == 429:
        status = WARNING
    else:
        status = CRITICAL
    text = body[-_OUTPUT_LIMIT:].decode("utf-8", "replace")
    return status, f"HTTP {check.method} {check.http}: {code} {reason} Output: {text}"


def _probe_tcp(check: _Check) -> tuple[str, str]:
    host, _, port = check.tcp.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=check.timeout):
            pass
    except (OSError, ValueError) as err:
        return CRITICAL, f"dial tcp {check.tcp}: {_describe(err)}"
    return PASSING, f"TCP connect {check.tcp}: Success"


# -- HTTP --------------------------------------------------------------------------------------


def _query_flag(query: dict[str, list[str]], name: str) -> bool:
    """Consul's presence flags: ``?passing`` or ``?passing=true`` set them, ``=false`` not."""
    values = query.get(name)
    return values is not None and values[0] not in ("0", "f", "F", "false", "FALSE", "False")


def _request_token(rec: Recorded) -> str | None:
    """The ACL token of a request, looked for where Consul looks, in Consul's order."""
    query_token = rec.query.get("token", [""])[0]
    if query_token:
        return query_token
    header_token = rec.header("X-Consul-Token")
    if header_token:
        return header_token
    scheme, _, credentials = (rec.header("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class _Api:
    """Consul's HTTP semantics: routing, ACLs, validation and error texts, over an _Agent."""

    def __init__(self, agent: _Agent, acl_token: str | None) -> None:
        self.agent = agent
        self.acl_token = acl_token
        # (path, method, endpoint); a path ending in "/" is a prefix and the rest, decoded, is
        # the endpoint's argument. The first match wins, so exact paths precede prefixes.
        self._routes: list[tuple[str, str, Callable[[Recorded, str], _Response]]] = [
            ("/v1/status/leader", "GET", self._leader),
            ("/v1/agent/service/register", "PUT", self._register),
            ("/v1/agent/service/deregister/", "PUT", self._deregister),
            ("/v1/agent/service/", "GET", self._service),
            ("/v1/agent/services", "GET", self._services),
            ("/v1/agent/checks", "GET", self._checks),
            ("/v1/agent/check/pass/", "PUT", self._ttl_setter(PASSING)),
            ("/v1/agent/check/warn/", "PUT", self._ttl_setter(WARNING)),
            ("/v1/agent/check/fail/", "PUT", self._ttl_setter(CRITICAL)),
            ("/v1/agent/check/update/", "PUT", self._ttl_update),
            ("/v1/catalog/service/", "GET", self._catalog_service),
            ("/v1/health/service/", "GET", self._health_service),
        ]

    def answer(self, rec: Recorded) -> _Response:
        with self.agent.lock:
            self.agent.requests.append(rec)
        delay, failure = self.agent.take_fault(rec)
        if delay > 0:
            time.sleep(delay)  # before handling, so a client that gives up still changes state
        if failure is not None:
            response = _Response.text(*failure)
        else:
            try:
                endpoint, argument = self._route(rec)
                self._authorize(rec)
                response = endpoint(rec, argument)
            except _ApiError as err:
                response = _Response.text(err.status, err.text, err.headers)
        policy = "deny" if self.acl_token is not None else "allow"
        response.headers["X-Consul-Default-ACL-Policy"] = policy
        return response

    def _route(self, rec: Recorded) -> tuple[Callable[[Recorded, str], _Response], str]:
        for path, method, endpoint in self._routes:
            if rec.path == path or (path.endswith("/") and rec.path.startswith(path)):
                if rec.method != method:
                    raise _ApiError(405, f"method {rec.method} not allowed", {"Allow": method})
                return endpoint, unquote(rec.path[len(path) :])
        raise _ApiError(404, "404 page not found\n")  # Go's http.NotFound text

    def _authorize(self, rec: Recorded) -> None:
        if self.acl_token is None or rec.path == "/v1/status/leader":
            return
        token = _request_token(rec)
        if token is None:
            raise _ApiError(403, "Permission denied")  # the anonymous token may do nothing
        if token != self.acl_token:
            raise _ApiError(403, "ACL not found")

    def _leader(self, rec: Recorded, _: str) -> _Response:
        with self.agent.lock:
            return _Response.json(self.agent.leader)

    def _register(self, rec: Recorded, _: str) -> _Response:
        raw = _load_object(rec.body, "structs.ServiceDefinition")
        service, checks = _parse_registration(raw)
        replace = _query_flag(rec.query, "replace-existing-checks")
        self.agent.register(service, checks, replace, raw)
        return _Response(200)

    def _deregister(self, rec: Recorded, service_id: str) -> _Response:
        if not self.agent.deregister(service_id):
            raise _ApiError(
                404,
                f"Unknown service ID {_go_quote(service_id)}. "
                "Ensure that the service ID is passed, not the service name.",
            )
        return _Response(200)

    def _service(self, rec: Recorded, service_id: str) -> _Response:
        view = self.agent.service_view(service_id)
        if view is None:
            raise _ApiError(404, f"unknown service ID: {service_id}")
        digest = hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()
        view["ContentHash"] = digest[:16]
        return _Response.json(view, pretty="pretty" in rec.query)

    def _services(self, rec: Recorded, _: str) -> _Response:
        return _Response.json(self.agent.services_view(), pretty="pretty" in rec.query)

    def _checks(self, rec: Recorded, _: str) -> _Response:
        return _Response.json(self.agent.checks_view(), pretty="pretty" in rec.query)

    def _ttl_setter(self, status: str) -> Callable[[Recorded, str], _Response]:
        def endpoint(rec: Recorded, check_id: str) -> _Response:
            self.agent.update_ttl(check_id, status, rec.query.get("note", [""])[0])
            return _Response(200)

        return endpoint

    def _ttl_update(self, rec: Recorded, check_id: str) -> _Response:
        fields = _Fields(_load_object(rec.body, "agent.checkUpdate"), "checkUpdate")
        status, output = fields.text("Status"), fields.text("Output")
        if status not in STATUSES:
            raise _ApiError(400, f"Invalid check status: '{status}'")
        self.agent.update_ttl(check_id, status, output)
        return _Response(200)

    def _catalog_service(self, rec: Recorded, name: str) -> _Response:
        if not name:
            raise _ApiError(400, "Missing service name")
        index, entries = self.agent.catalog_entries(name, rec.query.get("tag", []))
        return _Response.json(entries, pretty="pretty" in rec.query, headers=self._meta(index))

    def _health_service(self, rec: Recorded, name: str) -> _Response:
        if not name:
            raise _ApiError(400, "Missing service name")
        passing = _query_flag(rec.query, "passing")
        index, entries = self.agent.health_entries(name, rec.query.get("tag", []), passing)
        return _Response.json(entries, pretty="pretty" in rec.query, headers=self._meta(index))

    def _meta(self, index: int) -> dict[str, str]:
        with self.agent.lock:
            known = "true" if self.agent.leader else "false"
        return {
            "X-Consul-Index": str(index),
            "X-Consul-KnownLeader": known,
            "X-Consul-LastContact": "0",
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    # Go's net/http (Consul) sets TCP_NODELAY; without it headers and body written apart
    # meet the client's delayed ACK and every answer with a body stalls ~40 ms.
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        arrived = time.monotonic()
        target = urlsplit(self.path)
        rec = Recorded(
            time=arrived,
            method=self.command,
            path=target.path,
            query=parse_qs(target.query, keep_blank_values=True),
            headers=dict(self.headers.items()),
            body=self._read_body(),
        )
        response = self.server.api.answer(rec)
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read ConsulDouble.requests instead


class _Server(ThreadingHTTPServer):
    """The listener; it remembers open connections so it can cut them when it closes."""

    daemon_threads = True
    block_on_close = False  # stop() cuts connections itself instead of waiting for them

    def __init__(self, address: tuple[str, int], api: _Api) -> None:
        self.api = api
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host name (getfqdn), which can stall on a
        # machine without working DNS; the double needs only the socket.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A connection cut by cut_connections() or by the client is routine here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# -- the public double -------------------------------------------------------------------------


class ConsulDouble:
    """A Consul agent double serving the agent HTTP API on a loopback port.

    ``start()`` (or ``with``) binds the port and starts serving, running checks and reaping.
    All state lives in memory and survives ``refuse_connections`` like a restarted agent's.
    """

    def __init__(
        self,
        *,
        acl_token: str | None = None,
        catalog_lag: float = 0.0,
        reap_interval: float = 30.0,
        min_deregister_after: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """Configure the double; nothing listens before ``start()``.

        ``acl_token``: when set, every endpoint but ``/v1/status/leader`` needs this token.
        ``catalog_lag``: seconds before agent changes show in ``/v1/catalog``.
        ``reap_interval`` / ``min_deregister_after``: the reaper's period and the floor for
        DeregisterCriticalServiceAfter (Consul: 30 s and 1 min). ``port`` 0 picks a free port.
        """
        self._agent = _Agent(catalog_lag)
        self._api = _Api(self._agent, acl_token)
        self._reap_interval = reap_interval
        self._min_deregister_after = min_deregister_after
        self._host = host
        self._port = port
        self._lifecycle = threading.Lock()  # start/stop/refuse_connections, not agent state
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._background: threading.Thread | None = None
        self._stopping = threading.Event()
        # Every request in arrival order. A live list: copy it before iterating while requests
        # may still arrive.
        self.requests: list[Recorded] = self._agent.requests

    # -- lifecycle

    def start(self) -> ConsulDouble:
        """Bind and serve on daemon threads, and start the check runner and reaper."""
        with self._lifecycle:
            if self._background is not None:
                raise RuntimeError("ConsulDouble is already started")
            self._open_listener()
            self._stopping.clear()
            self._background = threading.Thread(
                target=self._run_background, name="consul-double-checks", daemon=True
            )
            self._background.start()
        return self

    def stop(self) -> None:
        """Stop serving (open connections are cut) and stop running checks. Idempotent."""
        with self._lifecycle:
            self._stopping.set()
            if self._background is not None:
                self._background.join()
                self._background = None
            self._close_listener()

    def __enter__(self) -> ConsulDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def addr(self) -> str:
        """``host:port``, the form CONSUL_HTTP_ADDR takes (known once started)."""
        if not self._port:
            raise RuntimeError("ConsulDouble is not started: no port yet")
        return f"{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.addr}"

    # -- what happened

    def services(self) -> dict[str, dict[str, Any]]:
        """The agent's services by ID, shaped as ``GET /v1/agent/services`` returns them."""
        return self._agent.services_view()

    def checks(self) -> dict[str, dict[str, Any]]:
        """The agent's checks by CheckID, shaped as ``GET /v1/agent/checks`` returns them.

        Besides Consul's fields, ``Definition`` holds HTTP, TCP, TTL, Interval, Timeout and
        DeregisterCriticalServiceAfter, durations formatted as Go does (``"5m"`` -> ``"5m0s"``).
        """
        return self._agent.checks_view()

    def registrations(self) -> list[dict[str, Any]]:
        """The JSON bodies of every successful ``PUT /v1/agent/service/register``, in order."""
        with self._agent.lock:
            return copy.deepcopy(self._agent.registrations)

    def deregistrations(self) -> list[tuple[float, str]]:
        """``(time.monotonic(), service_id)`` of every deregister call answered 200 or 404.

        Removals by the reaper are not here; see ``reaped()``.
        """
        with self._agent.lock:
            return list(self._agent.deregistrations)

    def reaped(self) -> list[tuple[float, str]]:
        """``(time.monotonic(), service_id)`` of every service the reaper removed."""
        with self._agent.lock:
            return list(self._agent.reaped)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate()`` is true, polling every 10 ms; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__name__", repr(predicate))
                raise AssertionError(f"condition {name} still false after {timeout}s")
            time.sleep(0.01)

    # -- fault switches

    def refuse_connections(self, on: bool = True) -> None:
        """While on, nothing listens (connects get ECONNREFUSED) and open connections are cut.

        Turning it off listens again on the same port. Agent state is kept throughout.
        """
        with self._lifecycle:
            if self._background is None:
                raise RuntimeError("ConsulDouble is not started")
            if on:
                self._close_listener()
            elif self._server is None:
                self._open_listener()

    def fail_next(
        self, n: int, status: int = 500, body: str = "rpc error making call: No cluster leader"
    ) -> None:
        """Answer the next ``n`` requests, whatever they are, with ``status`` and plain ``body``.

        Replaces any failures still pending. Failed requests change no state.
        """
        with self._agent.lock:
            self._agent.failures_left = n
            self._agent.failure = (status, body)

    def fail_when(
        self, matches: Callable[[Recorded], bool], status: int = 500, body: str = ""
    ) -> None:
        """Answer the first request for which ``matches(request)`` is true with ``status``."""
        with self._agent.lock:
            self._agent.targeted.append((matches, status, body))

    def set_delay(self, seconds: float) -> None:
        """Hold every answer this long. The request is handled after the delay."""
        with self._agent.lock:
            self._agent.delay = seconds

    def set_catalog_lag(self, seconds: float) -> None:
        """From now on, agent changes reach the catalog this many seconds after they happen."""
        with self._agent.lock:
            self._agent.sync_catalog()  # changes already due keep their old timing
            self._agent.catalog_lag = seconds

    def set_leader(self, leader: str) -> None:
        """Set what ``/v1/status/leader`` answers; ``""`` means no leader.

        Without a leader no agent change reaches the catalog. Once a leader is back, each
        pending change appears catalog_lag after it happened, or at once if that has passed.
        """
        with self._agent.lock:
            self._agent.sync_catalog()
            self._agent.leader = leader

    # -- internals

    def _open_listener(self) -> None:
        server = _Server((self._host, self._port), self._api)
        self._port = server.server_address[1]
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"consul-double-http-{self._port}",
            daemon=True,
        )
        self._serve_thread.start()
        self._server = server

    def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has stopped accepting
        server.server_close()  # closing the listening socket makes new connects fail at once
        server.cut_connections()  # as a dead agent's would, kept-alive connections end too
        if self._serve_thread is not None:
            self._serve_thread.join()

    def _run_background(self) -> None:
        next_reap = time.monotonic() + self._reap_interval
        while not self._stopping.wait(_TICK):
            now = time.monotonic()
            for check in self._agent.start_due_probes(now):
                # One thread per probe, so a slow target never delays other checks.
                threading.Thread(
                    target=self._probe, args=(check,), name="consul-double-probe", daemon=True
                ).start()
            self._agent.expire_ttls(now)
            self._agent.sync_catalog()
            if now >= next_reap:
                self._agent.reap(now, self._min_deregister_after)
                next_reap = now + self._reap_interval

    def _probe(self, check: _Check) -> None:
        try:
            status, output = _probe_http(check) if check.kind == "http" else _probe_tcp(check)
        except Exception as err:  # a probe must always finish, or its check would never rerun
            status, output = CRITICAL, f"{type(err).__name__}: {err}"
        self._agent.finish_probe(check, status, output)


def main(argv: list[str] | None = None) -> int:
    """Serve a double until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.doubles.consul", description="Serve a Consul agent double."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500, help="0 picks a free port")
    parser.add_argument("--acl-token", help="require this ACL token")
    parser.add_argument("--catalog-lag", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    double = ConsulDouble(
        acl_token=args.acl_token, catalog_lag=args.catalog_lag, host=args.host, port=args.port
    )
    with double:
        print(f"consul double listening on {double.addr}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
