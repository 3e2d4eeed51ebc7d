"""Durations as operators write them, and as Consul wants them.

Accepted everywhere a duration is configured: Go syntax (``10s``, ``1m30s``,
``250ms``, ``1.5h``), Mesos syntax (``5secs``, ``15mins``, ``2hrs``, ``1days``) and
plain seconds (``30``, ``2.5``). Consul only understands Go syntax, so
:func:`go_duration` writes a number of seconds back in that form.
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    # Mesos spellings (agent flags and MESOS_* variables use these)
    "secs": 1.0,
    "mins": 60.0,
    "hrs": 3600.0,
    "days": 86400.0,
    "weeks": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(µs|us|ns|ms|secs|mins|hrs|days|weeks|s|m|h)")
_PLAIN = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """Return ``text`` in seconds; raise ``ValueError`` naming the bad value."""
    value = text.strip()
    if _PLAIN.fullmatch(value):
        return float(value)
    pos, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(value):
        raise ValueError(
            f"invalid duration {text!r} (use Go syntax like 10s, 1m30s, 250ms, or seconds)"
        )
    return total


def go_duration(seconds: float) -> str:
    """Write ``seconds`` in Go syntax for Consul: ``90`` → ``1m30s``, ``0.25`` → ``250ms``."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms"
    whole = millis // 1000
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts)
