"""How to reach the Consul agent, read the way Consul's own CLI reads it.

``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN(_FILE)``, ``CONSUL_HTTP_SSL(_VERIFY)``,
``CONSUL_CACERT``/``CONSUL_CAPATH``, ``CONSUL_CLIENT_CERT``/``CONSUL_CLIENT_KEY``,
plus this tool's own ``CONSUL_RETRY_DEADLINE``, ``CONSUL_CATALOG_WAIT`` and
``CONSUL_DEREGISTER_CRITICAL_SERVICE_AFTER``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from hooks.consul.model import DEFAULT_DEREGISTER_CRITICAL_AFTER
from hooks.errors import ConfigError
from hooks.net import read_secret
from hooks.settings import env_bool, env_duration, env_str

DEFAULT_ADDR = "127.0.0.1:8500"


class ConsulConfig(NamedTuple):
    """Everything the Consul client needs. The token never shows in ``repr``."""

    base_url: str = f"http://{DEFAULT_ADDR}"
    token: str | None = None
    verify: bool | str = True
    client_cert: tuple[str, str] | None = None
    #: overall budget for one call, retries included
    retry_deadline: float = 10.0
    #: how long to wait for the catalog to show a change (0 = do not wait)
    catalog_wait: float = 10.0
    deregister_critical_after: float = DEFAULT_DEREGISTER_CRITICAL_AFTER

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, token_file: str | None = None
    ) -> ConsulConfig:
        """Read the configuration; ``token_file`` (``--consul-acl-file``) wins over the env."""
        env = os.environ if env is None else env
        return cls(
            base_url=_base_url(env),
            token=_token(env, token_file),
            verify=_verify(env),
            client_cert=_client_cert(env),
            retry_deadline=env_duration(env, "CONSUL_RETRY_DEADLINE", 10.0),
            catalog_wait=env_duration(env, "CONSUL_CATALOG_WAIT", 10.0),
            deregister_critical_after=env_duration(
                env, "CONSUL_DEREGISTER_CRITICAL_SERVICE_AFTER", DEFAULT_DEREGISTER_CRITICAL_AFTER
            ),
        )

    def with_(self, **changes) -> ConsulConfig:
        return self._replace(**changes)

    def __repr__(self) -> str:
        # A NamedTuple's repr shows every field; this one leaves the token out.
        shown = (f"{name}={getattr(self, name)!r}" for name in self._fields if name != "token")
        return f"ConsulConfig({', '.join(shown)})"

    def describe(self) -> dict:
        """The effective settings, fit for a log line (the token only as present/absent)."""
        return {
            "consul_url": self.base_url,
            "consul_token": "set" if self.token else "none",
            "consul_tls_verify": self.verify,
            "consul_retry_deadline": self.retry_deadline,
            "consul_catalog_wait": self.catalog_wait,
            "deregister_critical_service_after": self.deregister_critical_after,
        }


def _base_url(env: Mapping[str, str]) -> str:
    addr = env_str(env, "CONSUL_HTTP_ADDR", DEFAULT_ADDR).strip()
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "http", addr
    elif scheme == "unix":
        raise ConfigError("CONSUL_HTTP_ADDR: unix sockets are not supported, use host:port")
    elif scheme not in ("http", "https"):
        raise ConfigError(f"CONSUL_HTTP_ADDR: unknown scheme {scheme!r} (use http or https)")
    if not rest or rest.startswith("/"):
        raise ConfigError(f"CONSUL_HTTP_ADDR: no host in {addr!r}")
    if env_bool(env, "CONSUL_HTTP_SSL", False):
        scheme = "https"
    return f"{scheme}://{rest.rstrip('/')}"


def _token(env: Mapping[str, str], token_file: str | None) -> str | None:
    if token_file:
        return read_secret(token_file, "Consul ACL token file") or None
    env_file = env_str(env, "CONSUL_HTTP_TOKEN_FILE")
    if env_file:
        token = read_secret(env_file, "CONSUL_HTTP_TOKEN_FILE")
        if token:
            return token
    return env_str(env, "CONSUL_HTTP_TOKEN")


def _verify(env: Mapping[str, str]) -> bool | str:
    if not env_bool(env, "CONSUL_HTTP_SSL_VERIFY", True):
        return False
    for name in ("CONSUL_CACERT", "CONSUL_CAPATH"):
        path = env_str(env, name)
        if path:
            if not os.path.exists(path):
                raise ConfigError(f"{name}: {path} does not exist")
            return path
    return True


def _client_cert(env: Mapping[str, str]) -> tuple[str, str] | None:
    cert, key = env_str(env, "CONSUL_CLIENT_CERT"), env_str(env, "CONSUL_CLIENT_KEY")
    if bool(cert) != bool(key):
        raise ConfigError("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together")
    return (cert, key) if cert and key else None
