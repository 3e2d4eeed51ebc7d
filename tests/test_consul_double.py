"""The Consul double itself, exercised over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.consul import ConsulDouble

ROOT = Path(__file__).resolve().parent.parent
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    double: ConsulDouble, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, str]:
    """(status, body text) of one request; error statuses are returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(double.url + path, data=data, method=method)
    for name, value in headers.items():
        request.add_header(name.replace("_", "-"), value)
    try:
        with _OPENER.open(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def register(double: ConsulDouble, body: dict[str, Any], **headers: str) -> tuple[int, str]:
    return call(double, "PUT", "/v1/agent/service/register", body, **headers)


@pytest.fixture
def consul() -> Iterator[ConsulDouble]:
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def target() -> Iterator[str]:
    """A tiny HTTP service: /ok answers 200 "ok", anything else 429."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok" if self.path == "/ok" else b"slow down"
            self.send_response(200 if self.path == "/ok" else 429)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_register_read_back_and_deregister(consul: ConsulDouble) -> None:
    body = {"ID": "web/1", "Name": "web", "Port": 8080, "Tags": ["a"], "Check": {"TTL": "30s"}}
    assert register(consul, body) == (200, "")
    status, text = call(consul, "GET", "/v1/agent/service/web%2F1")
    assert status == 200
    assert json.loads(text)["Service"] == "web"
    check = consul.checks()["service:web/1"]
    assert (check["Name"], check["Status"], check["Type"]) == (
        "Service 'web' check",
        "critical",
        "ttl",
    )
    assert consul.registrations() == [body]

    assert call(consul, "PUT", "/v1/agent/service/deregister/web%2F1") == (200, "")
    assert call(consul, "PUT", "/v1/agent/service/deregister/web%2F1") == (
        404,
        'Unknown service ID "web/1". Ensure that the service ID is passed, not the service name.',
    )
    assert [sid for _, sid in consul.deregistrations()] == ["web/1", "web/1"]
    assert consul.services() == {} and consul.checks() == {}
    assert call(consul, "GET", "/v1/agent/service/web%2F1") == (404, "unknown service ID: web/1")
    assert call(consul, "GET", "/v1/agent/service/register")[0] == 405


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{nope", "Request decode failed: "),
        ({"Port": 1}, "Missing service name"),
        ({"Name": "a", "Port": "80"}, "Request decode failed: json: cannot unmarshal string"),
        ({"Name": "a", "Check": {"HTTP": "http://x/"}}, "Invalid check: Interval must be > 0"),
        (
            {"Name": "a", "Check": {"TTL": "5d"}},
            'Request decode failed: time: invalid duration "5d"',
        ),
        ({"Name": "a", "Check": {"TTL": "1s", "TCP": "x:1"}}, "Invalid check: only one of"),
    ],
)
def test_register_validation(consul: ConsulDouble, body: Any, expected: str) -> None:
    status, text = register(consul, body)
    assert status == 400 and text.startswith(expected), text
    assert consul.services() == {} and consul.registrations() == []


def test_keep_alive_connection_serves_several_answers(consul: ConsulDouble) -> None:
    connection = http.client.HTTPConnection(consul.addr, timeout=5)
    statuses, sockets = [], set()
    for method, path in [
        ("GET", "/v1/nowhere"),
        ("POST", "/v1/agent/services"),
        ("GET", "/v1/agent/services"),
    ]:
        connection.request(method, path)
        response = connection.getresponse()
        statuses.append((response.status, response.getheader("Content-Type"), response.read()))
        sockets.add(connection.sock)  # None once a connection has been closed
    connection.close()
    assert statuses == [
        (404, "text/plain; charset=utf-8", b"404 page not found\n"),
        (405, "text/plain; charset=utf-8", b"method POST not allowed"),
        (200, "application/json", b"{}"),
    ]
    assert len(sockets) == 1 and None not in sockets


def test_acl_tokens() -> None:
    with ConsulDouble(acl_token="s3cret") as consul:
        assert call(consul, "GET", "/v1/agent/services") == (403, "Permission denied")
        assert call(consul, "GET", "/v1/agent/services", X_Consul_Token="x") == (
            403,
            "ACL not found",
        )
        assert call(consul, "GET", "/v1/agent/services", X_Consul_Token="s3cret")[0] == 200
        assert call(consul, "GET", "/v1/agent/services", Authorization="Bearer s3cret")[0] == 200
        assert call(consul, "GET", "/v1/status/leader") == (200, '"127.0.0.1:8300"')
        assert consul.requests[2].header("x-consul-token") == "s3cret"


def test_catalog_lags_and_stalls_without_leader() -> None:
    with ConsulDouble(catalog_lag=0.3) as consul:

        def catalog() -> list[str]:
            _, text = call(consul, "GET", "/v1/catalog/service/web")
            return [entry["ServiceID"] for entry in json.loads(text)]

        registered = time.monotonic()
        register(consul, {"ID": "web-1", "Name": "web"})
        assert catalog() == []
        consul.wait_for(lambda: catalog() == ["web-1"])
        assert time.monotonic() - registered >= 0.3

        consul.set_leader("")
        assert call(consul, "GET", "/v1/status/leader") == (200, '""')
        deregistered = time.monotonic()
        call(consul, "PUT", "/v1/agent/service/deregister/web-1")
        consul.wait_for(lambda: time.monotonic() > deregistered + 0.5)
        assert catalog() == ["web-1"]  # no leader: the removal cannot reach the servers
        consul.set_leader("127.0.0.1:8300")
        consul.wait_for(lambda: catalog() == [])


def test_ttl_check_updates_and_expiry(consul: ConsulDouble) -> None:
    register(consul, {"ID": "w", "Name": "w", "Check": {"CheckID": "c", "TTL": "300ms"}})
    assert call(consul, "PUT", "/v1/agent/check/pass/c?note=fine") == (200, "")
    assert consul.checks()["c"]["Status"] == "passing"
    _, text = call(consul, "GET", "/v1/health/service/w?passing")
    assert [entry["Service"]["ID"] for entry in json.loads(text)] == ["w"]
    consul.wait_for(lambda: consul.checks()["c"]["Status"] == "critical")
    expired = "TTL expired (last output before timeout follows): fine"
    assert consul.checks()["c"]["Output"] == expired

    assert call(consul, "PUT", "/v1/agent/check/update/c", {"Status": "bad"})[0] == 400
    assert call(consul, "PUT", "/v1/agent/check/warn/nope") == (
        404,
        'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.',
    )
    register(
        consul, {"Name": "t", "Check": {"CheckID": "tcp", "TCP": "127.0.0.1:1", "Interval": "1s"}}
    )
    assert call(consul, "PUT", "/v1/agent/check/fail/tcp") == (
        500,
        'CheckID "tcp" does not have associated TTL',
    )


def test_http_and_tcp_checks_run(consul: ConsulDouble, target: str) -> None:
    checks = [
        {"CheckID": "ok", "HTTP": f"http://{target}/ok", "Interval": "50ms", "Timeout": "1s"},
        {"CheckID": "busy", "HTTP": f"http://{target}/busy", "Interval": "50ms"},
        {"CheckID": "tcp", "TCP": target, "Interval": "50ms"},
    ]
    register(consul, {"Name": "web", "Checks": checks})
    status = {"ok": "passing", "busy": "warning", "tcp": "passing"}
    consul.wait_for(lambda: {k: c["Status"] for k, c in consul.checks().items()} == status)
    assert consul.checks()["ok"]["Output"] == f"HTTP GET http://{target}/ok: 200 OK Output: ok"
    assert consul.checks()["tcp"]["Output"] == f"TCP connect {target}: Success"


def test_fail_next_and_delay(consul: ConsulDouble) -> None:
    consul.fail_next(2)
    body = {"Name": "web"}
    assert register(consul, body) == (500, "rpc error making call: No cluster leader")
    assert call(consul, "GET", "/v1/status/leader")[0] == 500
    assert register(consul, body) == (200, "")
    assert len(consul.requests) == 3 and consul.registrations() == [body]

    consul.set_delay(0.2)
    started = time.monotonic()
    assert call(consul, "GET", "/v1/status/leader")[0] == 200
    assert time.monotonic() - started >= 0.2


def test_refuse_connections_then_listen_on_same_port(consul: ConsulDouble) -> None:
    register(consul, {"Name": "web"})
    addr = consul.addr
    consul.refuse_connections()
    with pytest.raises(urllib.error.URLError) as raised:
        call(consul, "GET", "/v1/agent/services")
    assert isinstance(raised.value.reason, ConnectionRefusedError)
    consul.refuse_connections(False)
    assert consul.addr == addr
    assert call(consul, "GET", "/v1/agent/services")[0] == 200
    assert list(consul.services()) == ["web"]


def test_reaper_removes_services_critical_for_too_long() -> None:
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))  # bound but not listening: connects are refused
    dead = f"127.0.0.1:{refusing.getsockname()[1]}"
    reap_after = {"DeregisterCriticalServiceAfter": "10ms"}
    with refusing, ConsulDouble(reap_interval=0.05, min_deregister_after=0.3) as consul:
        registered = time.monotonic()
        register(consul, {"Name": "dead", "Check": {"TCP": dead, "Interval": "50ms", **reap_after}})
        register(
            consul, {"Name": "alive", "Check": {"TTL": "1h", "Status": "passing", **reap_after}}
        )
        consul.wait_for(lambda: "dead" not in consul.services())
        [(reaped_at, service_id)] = consul.reaped()
        assert service_id == "dead" and reaped_at - registered >= 0.3  # raised to the minimum
        assert list(consul.services()) == ["alive"] and consul.deregistrations() == []


def test_standalone_server_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.doubles.consul", "--port", "0"]
    with subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) as proc:
        line = proc.stdout.readline()
        assert line.startswith("consul double listening on 127.0.0.1:")
        port = line.rsplit(":", 1)[1].strip()
        with _OPENER.open(f"http://127.0.0.1:{port}/v1/status/leader", timeout=5) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
