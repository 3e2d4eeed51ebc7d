"""Reading typed settings from an environment mapping, with one-line errors.

Both entry points read their configuration through these helpers so a bad
value is always reported the same way: ``NAME: what is wrong``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hooks.durations import parse_duration
from hooks.errors import ConfigError

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The variable's value, or ``default`` when it is unset or empty."""
    value = env.get(name, "")
    return value if value != "" else default


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean as Go's ``strconv.ParseBool`` reads it (what Consul's CLI uses)."""
    value = env_str(env, name)
    if value is None:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: invalid boolean {value!r} (use true or false)")


def env_duration(env: Mapping[str, str], name: str, default: float) -> float:
    """A duration in seconds (Go or Mesos syntax, or plain seconds)."""
    value = env_str(env, name)
    if value is None:
        return default
    return duration(name, value)


def duration(name: str, value: str) -> float:
    """Parse ``value`` for the setting ``name``; a bad value names the setting."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return seconds
