"""Shared fixtures: the Consul double (or a real agent), and running the installed CLIs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.doubles.consul import ConsulDouble

BIN = Path(sys.executable).parent
REAL_CONSUL = os.environ.get("CONSUL_TEST_HTTP_ADDR", "")

#: ``register cli`` flags for one service, and the body Consul must receive for them
CLI_REGISTER = [
    "register", "cli", "--service-name", "web", "--pod-ip", "127.0.0.1", "--container-port",
    "8080", "--service-tags", "a, b,,c", "--check-path", "/health",
]  # fmt: skip
CLI_REGISTER_BODY = {
    "ID": "127.0.0.1_8080",
    "Name": "web",
    "Tags": ["a", "b", "c"],
    "Address": "127.0.0.1",
    "Port": 8080,
    "Check": {
        "CheckID": "service:127.0.0.1_8080",
        "HTTP": "http://127.0.0.1:8080/health",
        "Method": "GET",
        "Interval": "30s",
        "Timeout": "30s",
        "DeregisterCriticalServiceAfter": "15m",
    },
}


def console_script(name: str) -> str:
    """The installed console script (what a user runs), next to this interpreter."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}; run `make test`")
    return str(path)


@pytest.fixture
def consul():
    with ConsulDouble() as double:
        yield double


class RealAgent:
    """A real Consul agent at ``CONSUL_TEST_HTTP_ADDR``, read through its HTTP API."""

    def __init__(self, addr: str) -> None:
        self.addr = addr.removeprefix("http://")

    def service(self, service_id: str) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v1/agent/service/{service_id}") as r:
                return json.load(r)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


class DoubleAgent(RealAgent):
    """The double, read through the same HTTP API as a real agent."""

    def __init__(self, double: ConsulDouble) -> None:
        super().__init__(double.addr)
        self.double = double


@pytest.fixture(params=["double", "real"])
def agent(request):
    """A Consul agent the same test runs against: the double, and a real one when available."""
    if request.param == "real":
        if not REAL_CONSUL:
            pytest.skip("set CONSUL_TEST_HTTP_ADDR to run against a real Consul agent")
        yield RealAgent(REAL_CONSUL)
        return
    with ConsulDouble() as double:
        yield DoubleAgent(double)


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell leaks into the tools."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path),
        "CONSUL_CATALOG_WAIT": "2s",
        "CONSUL_RETRY_DEADLINE": "3s",
    }


def run_hook(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the installed ``consul-registration-hook`` and capture its output."""
    return subprocess.run(
        [console_script("consul-registration-hook"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single error line a failed run printed; fails the test if there is more."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]
