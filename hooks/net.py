"""Small network helpers shared by the providers and probes."""

from __future__ import annotations

from pathlib import Path

from hooks.errors import ConfigError


def host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host (as URLs and Consul need)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_secret(path: str, what: str) -> str:
    """A token from ``path``, stripped; a one-line :class:`ConfigError` that never shows it.

    A token goes into an HTTP header, so whitespace or control characters inside it
    would otherwise surface later as a baffling transport error.
    """
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text") from None
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ConfigError(f"{what} {path} holds more than one token (whitespace inside)")
    return token
