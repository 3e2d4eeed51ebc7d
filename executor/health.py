"""Mesos health checks, run the way Mesos's own executors run them.

* HTTP: ``GET <scheme>://127.0.0.1:<port><path>``; 200-399 is a pass.
* TCP: the connection to ``127.0.0.1:<port>`` opens.
* COMMAND: ``/bin/sh -c`` (or argv) in the task's environment exits 0 within the timeout;
  on timeout its whole process group is killed.

Checks start ``delay_seconds`` after launch and run ``interval_seconds`` after the
previous one finished. Failures are ignored while within ``grace_period_seconds`` of
launch until the first pass; ``consecutive_failures`` failures in a row exhaust the
check. The checker runs on its own thread and sleeps between runs; it reports each
counted result to a callback as a :class:`HealthEvent`.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from executor.task import GROUPS, Command, environment_of, signal_group
from hooks.errors import SourceError
from hooks.mesos.provider import health_check_port
from hooks.net import host_port
from hooks.probes import describe_error, http_status, passing_status, tcp_connect

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 4096
# Defaults of mesos.proto's HealthCheck (Marathon always sends every field).
DEFAULTS = {
    "delay_seconds": 15.0,
    "interval_seconds": 10.0,
    "timeout_seconds": 20.0,
    "grace_period_seconds": 10.0,
}
DEFAULT_CONSECUTIVE_FAILURES = 3


class ProbeResult(NamedTuple):
    ok: bool
    output: str


Probe = Callable[[], ProbeResult]


class HealthSpec(NamedTuple):
    """A ``TaskInfo.health_check``, checked and with Mesos's defaults filled in."""

    kind: str
    delay: float
    interval: float
    timeout: float
    grace_period: float
    consecutive_failures: int
    port: int = 0
    scheme: str = "http"
    path: str = "/"
    host: str = "127.0.0.1"
    command: Command | None = None

    @classmethod
    def from_task(cls, health: Mapping | None) -> HealthSpec | None:
        """The spec, ``None`` without a health check; :class:`SourceError` when invalid."""
        if not health:
            return None
        kind = health.get("type")
        timing = {key: _seconds(health, key) for key in DEFAULTS}
        failures = health.get("consecutive_failures", DEFAULT_CONSECUTIVE_FAILURES)
        if isinstance(failures, bool) or not isinstance(failures, (int, float)) or failures < 1:
            raise SourceError(f"health check consecutive_failures {failures!r} is not a count")
        common = {
            "delay": timing["delay_seconds"],
            "interval": timing["interval_seconds"],
            "timeout": timing["timeout_seconds"],
            "grace_period": timing["grace_period_seconds"],
            "consecutive_failures": int(failures),
        }
        if kind == "HTTP":
            http = health.get("http") or {}
            path = http.get("path") or "/"
            return cls(
                "HTTP",
                port=health_check_port(http),
                scheme=http.get("scheme") or "http",
                path=path if path.startswith("/") else "/" + path,
                host="::1" if http.get("protocol") == "IPv6" else "127.0.0.1",
                **common,
            )
        if kind == "TCP":
            tcp = health.get("tcp") or {}
            host = "::1" if tcp.get("protocol") == "IPv6" else "127.0.0.1"
            return cls("TCP", port=health_check_port(tcp), host=host, **common)
        if kind == "COMMAND":
            info = health.get("command") or {}
            if not info.get("value") and not info.get("arguments"):
                raise SourceError("the COMMAND health check has no command")
            command = Command(
                value=info.get("value") or "",
                shell=bool(info.get("shell", True)),
                arguments=tuple(str(a) for a in info.get("arguments") or ()),
                environment=environment_of(info),
            )
            return cls("COMMAND", command=command, **common)
        raise SourceError(f"health check type {kind!r} is not supported (HTTP, TCP or COMMAND)")

    def describe(self) -> str:
        if self.kind == "HTTP":
            return f"HTTP GET {self.url}"
        if self.kind == "TCP":
            return f"TCP {self.host}:{self.port}"
        return f"COMMAND {self.command.describe() if self.command else ''}"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def _seconds(health: Mapping, key: str) -> float:
    raw = health.get(key, DEFAULTS[key])
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise SourceError(f"health check {key} {raw!r} is not a number") from None
    if value < 0:
        raise SourceError(f"health check {key} {raw!r} is negative")
    return value


# -- probes ----------------------------------------------------------------------------------


def make_probe(spec: HealthSpec, env: Mapping[str, str], cwd: str) -> Probe:
    """The probe for ``spec``; COMMAND checks run in ``env`` and ``cwd`` (the task's)."""
    if spec.kind == "HTTP":
        return lambda: http_probe(spec.scheme, spec.host, spec.port, spec.path, spec.timeout)
    if spec.kind == "TCP":
        return lambda: tcp_probe(spec.host, spec.port, spec.timeout)
    assert spec.command is not None
    command_env = {**env, **dict(spec.command.environment)}
    return lambda: command_probe(spec.command, command_env, cwd, spec.timeout)


def http_probe(scheme: str, host: str, port: int, path: str, timeout: float) -> ProbeResult:
    # Mesos's checker does not verify the task's certificate either (curl -k).
    status = http_status(
        host,
        port,
        path,
        https=scheme == "https",
        headers={"User-Agent": "consul-mesos-executor"},
        timeout=timeout,
    )
    target = f"{scheme}://{host_port(host, port)}{path}"
    if isinstance(status, str):
        return ProbeResult(False, f"GET {target} failed: {status}")
    return ProbeResult(passing_status(status), f"GET {target}: HTTP {status}")


def tcp_probe(host: str, port: int, timeout: float) -> ProbeResult:
    failure = tcp_connect(host, port, timeout=timeout)
    if failure is not None:
        return ProbeResult(False, failure)
    return ProbeResult(True, f"TCP connect to {host_port(host, port)} succeeded")


def command_probe(
    command: Command, env: Mapping[str, str], cwd: str, timeout: float
) -> ProbeResult:
    try:
        proc = subprocess.Popen(
            command.argv(),
            executable=None if command.shell or not command.value else command.value,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a timeout can kill everything it started
        )
    except OSError as exc:
        return ProbeResult(False, f"cannot run the check command: {describe_error(exc)}")
    GROUPS.add(proc.pid)
    try:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return ProbeResult(False, f"the check command timed out after {timeout:g}s")
    finally:
        # Whatever the command left behind in its group dies with it.
        signal_group(proc.pid, signal.SIGKILL)
        GROUPS.discard(proc.pid)
    text = out.decode("utf-8", "replace")[-OUTPUT_LIMIT:].strip()
    verdict = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return ProbeResult(proc.returncode == 0, f"check command {verdict}: {text}".rstrip(": "))


# -- judging results -------------------------------------------------------------------------


class HealthEvent(NamedTuple):
    """One counted check result."""

    healthy: bool
    #: the first pass, or a flip between healthy and unhealthy
    changed: bool
    consecutive_failures: int
    output: str
    #: ``consecutive_failures`` reached: the task must be killed
    exhausted: bool = False


class HealthJudge:
    """Turns probe results into :class:`HealthEvent` values, applying grace and counting."""

    def __init__(self, spec: HealthSpec, started: float, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.started = started
        self.clock = clock
        self.healthy: bool | None = None
        self.failures = 0

    def judge(self, result: ProbeResult) -> HealthEvent | None:
        """The event for ``result``; ``None`` for a failure forgiven by the grace period."""
        if result.ok:
            changed = self.healthy is not True
            self.healthy, self.failures = True, 0
            return HealthEvent(True, changed, 0, result.output)
        if self.healthy is None and self.clock() - self.started < self.spec.grace_period:
            return None  # still starting up: failures before the first pass are forgiven
        changed = self.healthy is not False
        self.healthy = False
        self.failures += 1
        exhausted = self.failures >= self.spec.consecutive_failures
        return HealthEvent(False, changed, self.failures, result.output, exhausted)


class HealthChecker:
    """Runs a probe on its own thread and hands each counted result to ``on_event``."""

    def __init__(
        self,
        spec: HealthSpec,
        probe: Probe,
        on_event: Callable[[HealthEvent], None],
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._probe = probe
        self._on_event = on_event
        self._judge = HealthJudge(spec, clock() if started is None else started, clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-check", daemon=True)

    def start(self) -> None:
        log.info(
            "health check %s: first run in %gs, then every %gs",
            self.spec.describe(),
            self.spec.delay,
            self.spec.interval,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop after the probe in flight, if any; its result is dropped."""
        self._stop.set()

    def _run(self) -> None:
        if self._stop.wait(self.spec.delay):
            return
        while True:
            result = self._probe()
            if self._stop.is_set():
                return
            event = self._judge.judge(result)
            if event is None:
                log.info("health check failed within the grace period (ignored): %s", result.output)
            else:
                self._on_event(event)
                if event.exhausted:
                    return
            if self._stop.wait(self.spec.interval):
                return
