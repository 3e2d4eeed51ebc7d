"""A small client for the Consul agent's HTTP API (the calls registration needs).

Each call retries transient failures inside ``config.retry_deadline`` (see
:mod:`hooks.consul.retry`) and raises :class:`~hooks.errors.ConsulError` with
Consul's own message otherwise. The ACL token travels only in the
``X-Consul-Token`` header.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import requests

from hooks.consul import retry
from hooks.consul.config import ConsulConfig
from hooks.consul.model import ServiceInstance
from hooks.errors import ConsulError

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0


class ConsulClient:
    """Talks to one Consul agent. Safe to share between threads."""

    def __init__(self, config: ConsulConfig) -> None:
        self.config = config
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        if config.token:
            self._session.headers["X-Consul-Token"] = config.token
        self._session.verify = config.verify
        self._session.cert = config.client_cert
        # Proxies from the environment would send agent traffic (and the token) elsewhere.
        self._session.trust_env = False

    def close(self) -> None:
        self._session.close()

    # -- agent services --------------------------------------------------------------------

    def register(self, service: ServiceInstance) -> None:
        """Register (or replace) ``service`` on the agent."""
        self._call(
            "PUT",
            "/v1/agent/service/register?replace-existing-checks=true",
            f"register service {service.name!r} (id {service.id})",
            json=service.to_consul(),
        )

    def deregister(self, service_id: str) -> bool:
        """Remove ``service_id``; ``False`` when the agent did not know it (already gone)."""
        response = self._call(
            "PUT",
            f"/v1/agent/service/deregister/{quote(service_id, safe='')}",
            f"deregister service id {service_id}",
            missing_ok=True,
        )
        return response.status_code != 404

    def service(self, service_id: str) -> dict | None:
        """The agent's view of ``service_id``, or ``None`` when it has no such service."""
        response = self._call(
            "GET",
            f"/v1/agent/service/{quote(service_id, safe='')}",
            f"read service id {service_id}",
            missing_ok=True,
        )
        if response.status_code == 404:
            return None
        seen = _json(response, f"read service id {service_id}")
        return seen if isinstance(seen, dict) else {}

    def catalog_ids(self, name: str, *, budget: float | None = None) -> set[str]:
        """Service ids the catalog (the servers) lists for ``name``; ``budget`` caps the call's
        retry deadline (for callers that are themselves waiting against a deadline)."""
        what = f"read catalog of {name!r}"
        path = f"/v1/catalog/service/{quote(name, safe='')}"
        entries = _json(self._call("GET", path, what, budget=budget), what)
        if not isinstance(entries, list):
            raise ConsulError(f"cannot {what}: Consul answered something other than a list")
        return {entry.get("ServiceID", "") for entry in entries if isinstance(entry, dict)}

    def update_ttl(self, check_id: str, status: str, output: str = "") -> None:
        """Set a TTL check to ``passing``/``warning``/``critical`` and restart its clock."""
        self._call(
            "PUT",
            f"/v1/agent/check/update/{quote(check_id, safe='')}",
            f"update check {check_id}",
            json={"Status": status, "Output": output[:4096]},
        )

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json=None,
        missing_ok: bool = False,
        budget: float | None = None,
    ) -> requests.Response:
        budget = self.config.retry_deadline if budget is None else budget
        deadline = time.monotonic() + budget
        try:
            return retry.call(
                lambda: self._once(method, path, what, json, missing_ok, deadline), deadline
            )
        except requests.RequestException as exc:
            raise ConsulError(
                f"cannot {what}: Consul at {self.config.base_url} unreachable "
                f"for {budget:g}s ({_reason(exc)})"
            ) from None

    def _once(self, method, path, what, json, missing_ok, deadline) -> requests.Response:
        read_timeout = max(0.5, min(READ_TIMEOUT, deadline - time.monotonic()))
        response = self._session.request(
            method,
            self.config.base_url + path,
            json=json,
            timeout=(CONNECT_TIMEOUT, read_timeout),
            allow_redirects=False,
        )
        if response.ok or (missing_ok and response.status_code == 404):
            return response
        message = response.text.strip().splitlines()[0] if response.text.strip() else ""
        hint = " (check the ACL token)" if response.status_code in (401, 403) else ""
        raise ConsulError(
            f"Consul refused to {what}: {response.status_code} {message}{hint}".rstrip(),
            status=response.status_code,
        )


def _json(response: requests.Response, what: str):
    """The answer's JSON; a proxy or a broken agent answering garbage is a ConsulError."""
    try:
        return response.json()
    except ValueError:
        raise ConsulError(f"cannot {what}: Consul answered something that is not JSON") from None


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "SSL"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
