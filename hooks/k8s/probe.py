"""Running a container's probe the way the kubelet does, until it passes.

``register k8s`` runs in ``postStart``, at the same time as the application
starts, so it waits for the application to be healthy before announcing it.
:func:`wait_until_passing` waits ``initialDelaySeconds``, then tries every
``periodSeconds`` until the probe passes or the caller's timeout is spent.

Handlers, with kubelet semantics:

* ``httpGet`` — success is a status of 200-399; ``scheme: HTTPS`` does not
  verify the certificate; ``httpHeaders``, named ports and ``host`` are honoured.
* ``tcpSocket`` — the connection opens.
* ``exec`` — the command (argv, no shell) exits 0 within ``timeoutSeconds``;
  the hook runs inside the container, so the command is run right here.
* ``grpc`` — approximated by a TCP connect to its port (the health protocol
  needs a gRPC stack the hook does not carry).

Each attempt is bounded by ``timeoutSeconds`` (default 1).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping

from hooks import __version__
from hooks.errors import SourceError
from hooks.k8s.provider import (
    DEFAULT_PERIOD,
    DEFAULT_TIMEOUT,
    http_path,
    probe_seconds,
    resolve_port,
)
from hooks.probes import http_get, tcp_connect

log = logging.getLogger(__name__)

USER_AGENT = f"consul-registration-hook/{__version__} (kube-probe)"
_OUTPUT_LIMIT = 200


def wait_until_passing(
    probe: Mapping,
    container: Mapping,
    pod_ip: str,
    timeout: float,
    *,
    what: str = "probe",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once ``probe`` passes against ``pod_ip``; :class:`SourceError` after ``timeout``.

    ``container`` resolves named ports. ``what`` names the probe in messages
    (``readinessProbe of container "web"``). A probe without a handler the hook
    knows returns at once. The last attempt happens at the deadline, so a
    timeout shorter than ``periodSeconds`` still gets a second chance.
    """
    if not _handler(probe):
        log.info("%s has no handler to run; not waiting", what)
        return
    deadline = clock() + timeout
    delay = probe_seconds(probe.get("initialDelaySeconds"), 0.0)
    if delay:
        log.info("waiting %gs (initialDelaySeconds) before running %s", delay, what)
        sleep(min(delay, max(0.0, deadline - clock())))
    period = probe_seconds(probe.get("periodSeconds"), DEFAULT_PERIOD)
    log.info("waiting up to %gs for %s to pass", timeout, what)
    previous = None
    while True:
        failure = attempt(probe, container, pod_ip)
        if failure is None:
            log.info("%s passed", what)
            return
        now = clock()
        if now >= deadline:
            raise SourceError(f"{what} did not pass within {timeout:g}s; last attempt: {failure}")
        # A long wait repeats the same failure many times; say it once, and each change.
        log.log(
            logging.DEBUG if failure == previous else logging.INFO,
            "%s not passing yet: %s",
            what,
            failure,
        )
        previous = failure
        sleep(min(period, deadline - now))


def attempt(probe: Mapping, container: Mapping, pod_ip: str) -> str | None:
    """Run ``probe`` once: ``None`` when it passed, else why it failed (one line)."""
    timeout = probe_seconds(probe.get("timeoutSeconds"), DEFAULT_TIMEOUT)
    kind = _handler(probe)
    action = probe.get(kind) or {}
    try:
        if kind == "httpGet":
            return _http(action, container, pod_ip, timeout)
        if kind in ("tcpSocket", "grpc"):
            host = action.get("host") or pod_ip
            port = resolve_port(action.get("port"), container, f"{kind} probe")
            return tcp_connect(host, port, timeout=timeout)
        if kind == "exec":
            return _exec(action.get("command") or [], timeout)
    except SourceError as exc:
        # A probe port that cannot be resolved never heals; report it as the failure.
        return str(exc)
    return None


def _handler(probe: Mapping) -> str | None:
    for kind in ("httpGet", "tcpSocket", "exec", "grpc"):
        if isinstance(probe.get(kind), Mapping):
            return kind
    return None


def _http(action: Mapping, container: Mapping, pod_ip: str, timeout: float) -> str | None:
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container, "httpGet probe")
    https = str(action.get("scheme") or "HTTP").upper() == "HTTPS"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        if isinstance(header, Mapping) and header.get("name"):
            headers[str(header["name"])] = str(header.get("value", ""))
    path = http_path(action.get("path"))
    return http_get(host, port, path, https=https, headers=headers, timeout=timeout)


def _exec(command: object, timeout: float) -> str | None:
    if not isinstance(command, list) or not command:
        return "exec probe has no command"
    argv = [str(part) for part in command]
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"command {argv[0]} timed out after {timeout:g}s"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"
    if result.returncode == 0:
        return None
    output = " ".join(result.stdout.decode(errors="replace").split())[:_OUTPUT_LIMIT]
    return f"command {argv[0]} exited {result.returncode}" + (f": {output}" if output else "")
