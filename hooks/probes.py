"""HTTP and TCP probes, shared by the Kubernetes hook and the Mesos executor.

Both follow the same rules: an HTTP answer of 200-399 passes (redirects are not
followed), HTTPS does not verify the certificate, and a TCP probe passes when the
connection opens. Standard library only: the executor imports this module.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping

from hooks.net import host_port


def http_url(host: str, port: int, path: str, *, https: bool = False) -> str:
    """The URL a probe requests, with brackets around an IPv6 host."""
    return f"{'https' if https else 'http'}://{host_port(host, port)}{path}"


def http_status(
    host: str,
    port: int,
    path: str,
    *,
    https: bool = False,
    headers: Mapping[str, str] | None = None,
    timeout: float,
) -> int | str:
    """``GET path`` once: the answer's status, or why no answer came (one line)."""
    if https:
        # Neither the kubelet nor Mesos's checker verifies the task's certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        # http.client leaves out its own Host header when ``headers`` set one.
        connection.request("GET", path, headers=dict(headers or {}))
        return connection.getresponse().status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: a header name or value http.client refuses to send
        return describe_error(exc)
    finally:
        connection.close()


def passing_status(status: int) -> bool:
    """200-399 passes; a redirect is not followed but already counts as success."""
    return 200 <= status < 400


def http_get(
    host: str,
    port: int,
    path: str,
    *,
    https: bool = False,
    headers: Mapping[str, str] | None = None,
    timeout: float,
) -> str | None:
    """``None`` when ``GET path`` answers 200-399, else why it failed (one line)."""
    url = http_url(host, port, path, https=https)
    status = http_status(host, port, path, https=https, headers=headers, timeout=timeout)
    if isinstance(status, str):
        return f"GET {url}: {status}"
    return None if passing_status(status) else f"GET {url} answered HTTP {status}"


def tcp_connect(host: str, port: int, *, timeout: float) -> str | None:
    """``None`` when a TCP connection to ``host:port`` opens, else why not (one line)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"TCP connect to {host_port(host, port)}: {describe_error(exc)}"


def describe_error(exc: BaseException) -> str:
    """A short, lower-case reason for a failed connection or request."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
