"""TaskInfo → Consul services, following the marathon-consul label conventions.

Pure functions: they read a task as Mesos renders it in JSON (the ``LAUNCH``
event's ``TaskInfo``, or a task from the agent's ``/state``) and return
:class:`ServiceInstance` values; nothing here talks to the network.

* The task label ``consul`` names the service (empty or ``true``: derived from
  the task id). Without a ``consul`` label on the task or on any port nothing
  is registered.
* A port label ``consul`` (comma-separated) registers those names on that port;
  when no port has one, the task's name goes on the first port.
* Labels whose value is ``tag`` become tags (task labels on every service, port
  labels on that port's services); ``tag:<name>`` only on service ``<name>``.
  ``{port:<port name>}`` in a tag becomes that port's number.
* Ids are ``<ip>_<port>`` (``<ip>_<port>_<name>`` when a port has several names)
  so a new instance on the same address replaces a stale one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from hooks.consul.model import DEFAULT_DEREGISTER_CRITICAL_AFTER, Check, ServiceInstance
from hooks.errors import SourceError
from hooks.net import host_port

_PLACEHOLDER = re.compile(r"\{port:([^}]*)\}")


class Rules(NamedTuple):
    """The knobs of the mapping. ``global_tag=None`` and ``task_tag=False`` give the
    original hook's Mesos mode; the defaults are the executor's."""

    global_tag: str | None = "marathon"
    task_tag: bool = True
    deregister_critical_after: float = DEFAULT_DEREGISTER_CRITICAL_AFTER


class _Port(NamedTuple):
    number: int
    name: str
    labels: tuple[tuple[str, str], ...]


def labels_of(holder: Mapping | None) -> tuple[tuple[str, str], ...]:
    """``(key, value)`` pairs from ``{"labels": [...]}`` (TaskInfo) or ``[...]`` (agent state)."""
    raw = holder.get("labels", []) if isinstance(holder, Mapping) else holder or []
    if isinstance(raw, Mapping):
        raw = raw.get("labels", [])
    pairs = []
    for item in raw:
        key, value = str(item.get("key", "")), str(item.get("value", ""))
        for text in (key, value):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise SourceError(f"label {key!r} is not valid UTF-8") from None
        pairs.append((key, value))
    return tuple(pairs)


def default_service_name(task_id: str) -> str:
    """marathon-consul's name for a task: ``web_hello.3f0e…`` → ``web.hello``."""
    trimmed = task_id.strip().strip("/").replace("/", "-").replace("_", ".")
    return trimmed.rsplit(".", 1)[0] if "." in trimmed else trimmed


def task_ports(task: Mapping) -> list[_Port]:
    ports = []
    for raw in ((task.get("discovery") or {}).get("ports") or {}).get("ports") or []:
        number = raw.get("number")
        if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 65536:
            raise SourceError(f"port {number!r} in discovery.ports is not a port number")
        ports.append(_Port(number, str(raw.get("name") or ""), labels_of(raw.get("labels"))))
    return ports


def services_from_task(
    task: Mapping, address: str, rules: Rules | None = None
) -> list[ServiceInstance]:
    """The services ``task`` asks for, at ``address``; empty when it asks for none."""
    rules = rules or Rules()
    task_id = str((task.get("task_id") or {}).get("value") or task.get("id") or "")
    labels = labels_of(task.get("labels"))
    ports = task_ports(task)
    task_name = _label(labels, "consul")
    named_ports = [(p, _names(p)) for p in ports if _label(p.labels, "consul") is not None]
    if task_name is None and not named_ports:
        return []
    if not named_ports:
        if not ports:
            raise SourceError("the task has a consul label but no ports to register")
        name = task_name if task_name not in ("", "true") else default_service_name(task_id)
        named_ports = [(ports[0], [name])]

    check = check_from_health(task.get("health_check"), address, rules.deregister_critical_after)
    task_tags = [k for k, v in labels if v == "tag"]
    services = []
    for port, names in named_ports:
        for name in names:
            tags = [rules.global_tag] if rules.global_tag else []
            tags += [k for k, v in port.labels if v == "tag" or v == f"tag:{name}"]
            tags += task_tags
            if rules.task_tag and task_id:
                tags.append(f"marathon-task:{task_id}")
            service_id = f"{address}_{port.number}" + (f"_{name}" if len(names) > 1 else "")
            services.append(
                ServiceInstance(
                    id=service_id,
                    name=name,
                    address=address,
                    port=port.number,
                    tags=tuple(_fill_ports(tag, ports) for tag in _unique(tags)),
                    check=check,
                )
            )
    return services


def check_from_health(
    health: Mapping | None, address: str, deregister_critical_after: float
) -> Check | None:
    """The Consul check for a Mesos ``health_check``: HTTP, TCP, or TTL for COMMAND checks."""
    if not health:
        return None
    kind = health.get("type")
    interval = _seconds(health, "interval_seconds", 10.0)
    timeout = _seconds(health, "timeout_seconds", 20.0)
    common = {"status": "passing", "deregister_critical_after": deregister_critical_after}
    if kind == "HTTP":
        http = health.get("http") or {}
        path = http.get("path") or ""
        if path and not path.startswith("/"):
            path = "/" + path
        port = health_check_port(http)
        url = f"{http.get('scheme') or 'http'}://{host_port(address, port)}{path}"
        return Check.http(url, interval, timeout, **common)
    if kind == "TCP":
        target = host_port(address, health_check_port(health.get("tcp") or {}))
        return Check.tcp(target, interval, timeout, **common)
    if kind == "COMMAND":
        return Check.ttl_check(command_check_ttl(interval, timeout), **common)
    raise SourceError(f"health check type {kind!r} is not supported (HTTP, TCP or COMMAND)")


def command_check_ttl(interval: float, timeout: float) -> float:
    """TTL for a COMMAND check the executor reports: two missed rounds mean it is gone."""
    return max(10.0, 2 * interval + timeout)


def _seconds(health: Mapping, key: str, default: float) -> float:
    value = health.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise SourceError(f"health check {key} {value!r} is not a number of seconds")
    return float(value)


def health_check_port(section: Mapping) -> int:
    """The ``port`` of a health check's ``http`` or ``tcp`` section; :class:`SourceError` if bad."""
    port = section.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SourceError(f"health check port {port!r} is not a port number")
    return port


def _label(labels: Sequence[tuple[str, str]], key: str) -> str | None:
    return next((v for k, v in labels if k == key), None)


def _names(port: _Port) -> list[str]:
    names = [n.strip() for n in (_label(port.labels, "consul") or "").split(",") if n.strip()]
    if not names:
        raise SourceError(f"port {port.number} has an empty consul label")
    return names


def _fill_ports(tag: str, ports: Sequence[_Port]) -> str:
    def number(match: re.Match) -> str:
        wanted = match.group(1)
        for port in ports:
            if port.name == wanted:
                return str(port.number)
        raise SourceError(f"tag {tag!r} names port {wanted!r}, but the task has no such port")

    return _PLACEHOLDER.sub(number, tag)


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
