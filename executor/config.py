"""The executor's configuration: its own ``EXECUTOR_*`` settings and the agent's ``MESOS_*`` facts.

Settings come from the environment (Marathon's app ``env`` reaches the executor,
so they work per app) and, when ``EXECUTOR_CONFIG`` names a YAML file, from that
file's keys (lower case, without the prefix); the environment wins. Everything
is read and checked before the executor subscribes, so a bad value stops it with
one line naming the setting. ``yaml`` is imported only when a file is named.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Mapping
from typing import NamedTuple

from hooks.consul.config import ConsulConfig
from hooks.errors import ConfigError
from hooks.mesos.agent import required
from hooks.settings import duration, env_str

PREFIX = "EXECUTOR_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
#: what the file may set (each also as ``EXECUTOR_<KEY>``)
FILE_KEYS = (
    "propagation_delay",
    "kill_grace_period",
    "consul_global_tag",
    "deregister_critical_service_after",
    "advertise_ip",
    "log_level",
    "log_format",
)

# Mesos agent defaults, used when a variable is missing (a real agent always sets them).
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_RECOVERY_TIMEOUT = 15 * 60.0
DEFAULT_BACKOFF_MAX = 2.0

AUTH_TOKEN_VAR = "MESOS_EXECUTOR_AUTHENTICATION_TOKEN"


class AgentEnv(NamedTuple):
    """What the Mesos agent told this executor through ``MESOS_*`` variables."""

    endpoint: str
    framework_id: str
    executor_id: str
    sandbox: str
    #: ``MESOS_CHECKPOINT == "1"`` (pymesos reads ``bool("0")`` as on)
    checkpoint: bool = False
    recovery_timeout: float = DEFAULT_RECOVERY_TIMEOUT
    subscription_backoff_max: float = DEFAULT_BACKOFF_MAX
    shutdown_grace_period: float = DEFAULT_SHUTDOWN_GRACE
    #: ``MESOS_LOCAL`` set: never SIGKILL our own process group (pymesos's test switch)
    local: bool = False
    auth_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentEnv:
        """Read the agent's variables; :class:`ConfigError` names a missing or bad one."""
        endpoint = required(env, "MESOS_AGENT_ENDPOINT")
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"MESOS_AGENT_ENDPOINT: {endpoint!r} is not ip:port")
        checkpoint = env.get("MESOS_CHECKPOINT") == "1"
        return cls(
            endpoint=endpoint,
            framework_id=required(env, "MESOS_FRAMEWORK_ID"),
            executor_id=required(env, "MESOS_EXECUTOR_ID"),
            sandbox=env_str(env, "MESOS_SANDBOX") or env_str(env, "MESOS_DIRECTORY") or os.getcwd(),
            checkpoint=checkpoint,
            recovery_timeout=_duration_var(env, "MESOS_RECOVERY_TIMEOUT", DEFAULT_RECOVERY_TIMEOUT),
            subscription_backoff_max=_duration_var(
                env, "MESOS_SUBSCRIPTION_BACKOFF_MAX", DEFAULT_BACKOFF_MAX
            ),
            shutdown_grace_period=_duration_var(
                env, "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", DEFAULT_SHUTDOWN_GRACE
            ),
            local=bool(env.get("MESOS_LOCAL")),
            auth_token=env_str(env, AUTH_TOKEN_VAR),
        )

    def describe(self) -> dict:
        return {
            "agent": self.endpoint,
            "executor_id": self.executor_id,
            "sandbox": self.sandbox,
            "checkpoint": self.checkpoint,
            "recovery_timeout": self.recovery_timeout,
            "subscription_backoff_max": self.subscription_backoff_max,
            "shutdown_grace_period": self.shutdown_grace_period,
            "agent_auth": "bearer" if self.auth_token else "none",
        }

    def __repr__(self) -> str:
        # A NamedTuple's repr shows every field; this one leaves the token out.
        shown = (f"{name}={getattr(self, name)!r}" for name in self._fields if name != "auth_token")
        return f"AgentEnv({', '.join(shown)})"


class ExecutorConfig(NamedTuple):
    """Everything the executor runs with; the tokens never show in ``repr`` or the log."""

    agent: AgentEnv
    consul: ConsulConfig
    #: the address services are registered at
    address: str
    propagation_delay: float = 5.0
    kill_grace_period: float = 5.0
    consul_global_tag: str = "marathon"
    deregister_critical_after: float = 15 * 60.0
    log_level: str = "info"
    log_format: str = "text"
    config_file: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutorConfig:
        """Read and check everything; raise :class:`ConfigError` with one line on a bad value."""
        env = os.environ if env is None else env
        settings = _Settings(env)
        consul = ConsulConfig.from_env(env)
        agent = AgentEnv.from_env(env)
        return cls(
            agent=agent,
            consul=consul,
            address=advertise_address(env, settings.get("advertise_ip")),
            propagation_delay=settings.duration("propagation_delay", 5.0),
            kill_grace_period=settings.duration("kill_grace_period", 5.0),
            consul_global_tag=settings.get("consul_global_tag") or "marathon",
            deregister_critical_after=settings.duration(
                "deregister_critical_service_after", consul.deregister_critical_after
            ),
            log_level=settings.choice("log_level", LOG_LEVELS, "info"),
            log_format=settings.choice("log_format", LOG_FORMATS, "text"),
            config_file=settings.path,
        )

    def describe(self) -> dict:
        """The effective configuration, fit for the start-up log line (no token values)."""
        return {
            "address": self.address,
            "propagation_delay": self.propagation_delay,
            "kill_grace_period": self.kill_grace_period,
            "consul_global_tag": self.consul_global_tag,
            "deregister_critical_service_after": self.deregister_critical_after,
            "log_level": self.log_level,
            "log_format": self.log_format,
            "config_file": self.config_file or "none",
            **self.consul.describe(),
            **self.agent.describe(),
        }


class _Settings:
    """``EXECUTOR_*`` values from the environment over those of the optional YAML file."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.path = env_str(env, PREFIX + "CONFIG")
        self.file = _read_yaml(self.path) if self.path else {}

    def get(self, key: str) -> str | None:
        return self._lookup(key)[0]

    def duration(self, key: str, default: float) -> float:
        value, origin = self._lookup(key)
        if value is None:
            return default
        return duration(origin, value)

    def choice(self, key: str, allowed: tuple[str, ...], default: str) -> str:
        value, origin = self._lookup(key)
        if value is None:
            return default
        if value.lower() not in allowed:
            raise ConfigError(f"{origin}: {value!r} is not one of {', '.join(allowed)}")
        return value.lower()

    def _lookup(self, key: str) -> tuple[str | None, str]:
        """The value and where it came from (the variable, or the file and key)."""
        name = PREFIX + key.upper()
        value = env_str(self.env, name)
        if value is not None:
            return value.strip(), name
        if key in self.file:
            return self.file[key], f"{self.path}: {key}"
        return None, name


def _read_yaml(path: str) -> dict[str, str]:
    import yaml  # only when a file is named: it costs memory in every executor

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError(f"{PREFIX}CONFIG: cannot read {path}: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{PREFIX}CONFIG: {path} is not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{PREFIX}CONFIG: {path} must hold a mapping of settings")
    values = {}
    for key, value in data.items():
        if key not in FILE_KEYS:
            known = ", ".join(FILE_KEYS)
            raise ConfigError(f"{path}: unknown key {key!r} (known: {known})")
        if isinstance(value, (dict, list, bool)):
            raise ConfigError(f"{path}: {key}: expected a string or a number")
        if value is not None:
            values[key] = str(value).strip()
    return values


def advertise_address(env: Mapping[str, str], explicit: str | None = None) -> str:
    """The IP to register: ``EXECUTOR_ADVERTISE_IP``, else ``LIBPROCESS_IP`` (unless
    ``0.0.0.0``), else ``HOST`` resolved, else this host's name resolved."""
    if explicit:
        try:
            return str(ipaddress.ip_address(explicit))
        except ValueError:
            raise ConfigError(f"{PREFIX}ADVERTISE_IP: {explicit!r} is not an IP address") from None
    libprocess_ip = env_str(env, "LIBPROCESS_IP")
    if libprocess_ip and libprocess_ip != "0.0.0.0":
        try:
            return str(ipaddress.ip_address(libprocess_ip))
        except ValueError:
            logging.getLogger(__name__).warning(
                "ignoring LIBPROCESS_IP %r: not an IP", libprocess_ip
            )
    candidates = [("HOST", env_str(env, "HOST")), ("this host's name", socket.gethostname())]
    for origin, name in candidates:
        if not name:
            continue
        try:
            return socket.gethostbyname(name)
        except OSError:
            logging.getLogger(__name__).warning("cannot resolve %s %r", origin, name)
    raise ConfigError(
        "cannot find the address to register: set EXECUTOR_ADVERTISE_IP "
        "(LIBPROCESS_IP is unset or 0.0.0.0 and neither HOST nor the host name resolves)"
    )


def _duration_var(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_str(env, name)
    return default if value is None else duration(name, value)
