"""``consul-registration-hook``: command line, ``cli`` and ``mesos`` modes, Consul behaviour.

Every test runs the installed console script as a subprocess against the
Consul double (and, where marked by the ``agent`` fixture, a real agent too).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import CLI_REGISTER, CLI_REGISTER_BODY, one_line_error, run_hook


def env_for(base_env, addr, **extra):
    return {**base_env, "CONSUL_HTTP_ADDR": addr, **extra}


def test_version_and_help_at_every_level(base_env):
    version = run_hook("--version", env=base_env)
    assert version.returncode == 0 and version.stdout.startswith("consul-registration-hook 0.")
    for args in (
        [],
        ["register"],
        ["deregister"],
        ["register", "k8s"],
        ["register", "cli"],
        ["deregister", "cli"],
        ["register", "mesos"],
        ["deregister", "k8s"],
    ):
        result = run_hook(*args, "--help", env=base_env)
        assert result.returncode == 0 and result.stdout.startswith("usage: "), args


def test_register_cli_sends_the_originals_body(agent, base_env):
    result = run_hook(*CLI_REGISTER, env=env_for(base_env, agent.addr))
    assert result.returncode == 0, result.stderr
    if hasattr(agent, "double"):
        assert agent.double.registrations() == [CLI_REGISTER_BODY]
    seen = agent.service("127.0.0.1_8080")
    assert (seen["Service"], seen["Port"], seen["Tags"]) == ("web", 8080, ["a", "b", "c"])

    gone = run_hook(
        "deregister", "cli", "--service-id", "127.0.0.1_8080", env=env_for(base_env, agent.addr)
    )
    assert gone.returncode == 0, gone.stderr
    assert agent.service("127.0.0.1_8080") is None
    again = run_hook(
        "deregister", "cli", "--service-id", "127.0.0.1_8080", env=env_for(base_env, agent.addr)
    )
    assert again.returncode == 0 and "already gone" in again.stderr


def test_cli_mode_reads_the_originals_environment_variables(consul, base_env):
    env = env_for(
        base_env,
        consul.addr,
        KUBERNETES_SERVICE_NAME="api",
        KUBERNETES_POD_IP="10.1.1.1",
        KUBERNETES_CONTAINER_PORT="9000",
        KUBERNETES_SERVICE_TAGS="x",
        CONSUL_DEREGISTER_CRITICAL_SERVICE_AFTER="2m",
    )
    assert run_hook("register", "cli", env=env).returncode == 0
    [body] = consul.registrations()
    assert (body["ID"], body["Tags"], body["Check"]["HTTP"]) == (
        "10.1.1.1_9000",
        ["x"],
        "http://10.1.1.1:9000",
    )
    assert body["Check"]["DeregisterCriticalServiceAfter"] == "2m"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["register", "cli", "--pod-ip", "1.2.3.4", "--container-port", "80"],
            "--service-name is required",
        ),
        (
            [
                "register",
                "cli",
                "--service-name",
                "s",
                "--pod-ip",
                "1.2.3.4",
                "--container-port",
                "http",
            ],
            "--container-port: 'http' is not a port number",
        ),
        (["--catalog-wait", "soon", "register", "cli"], "--catalog-wait: invalid duration 'soon'"),
        (
            ["--consul-acl-file", "/nonexistent/token", *CLI_REGISTER],
            "cannot read Consul ACL token file /nonexistent/token: No such file or directory",
        ),
        (["deregister", "cli"], "--service-id is required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(consul, base_env, args, message):
    result = run_hook(*args, env=env_for(base_env, consul.addr))
    assert result.returncode == 2
    assert message in one_line_error(result)
    assert consul.registrations() == []


def test_acl_token_goes_in_the_header_only(tmp_path, base_env):
    from tests.doubles.consul import ConsulDouble

    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-acl\n")
    with ConsulDouble(acl_token="s3cr3t-acl") as consul:
        env = env_for(base_env, consul.addr, HOOK_LOG_LEVEL="debug")
        result = run_hook("--consul-acl-file", str(token_file), *CLI_REGISTER, env=env)
        assert result.returncode == 0, result.stderr
        assert consul.services().keys() == {"127.0.0.1_8080"}
        for request in consul.requests:
            assert request.headers.get("X-Consul-Token") == "s3cr3t-acl"
            assert "token" not in request.query
        assert "s3cr3t" not in result.stderr + result.stdout

        token_file.write_text("wrong-token")
        debug = run_hook("--consul-acl-file", str(token_file), *CLI_REGISTER, env=env)
        assert debug.returncode == 1 and "wrong-token" not in debug.stderr
        env["HOOK_LOG_LEVEL"] = "info"
        refused = run_hook("--consul-acl-file", str(token_file), *CLI_REGISTER, env=env)
        assert "403 ACL not found (check the ACL token)" in one_line_error(refused)


def test_transient_failures_are_retried(consul, base_env):
    consul.fail_next(2, status=500)
    result = run_hook(*CLI_REGISTER, env=env_for(base_env, consul.addr))
    assert result.returncode == 0, result.stderr
    assert "retrying" in result.stderr
    assert consul.services().keys() == {"127.0.0.1_8080"}


def test_a_bad_definition_fails_at_once_with_consuls_message(consul, base_env):
    args = [
        "register",
        "cli",
        "--service-name",
        "",
        "--pod-ip",
        "127.0.0.1",
        "--container-port",
        "8080",
    ]
    env = env_for(base_env, consul.addr, KUBERNETES_SERVICE_NAME="")
    # An empty name is caught before Consul is asked; a name Consul rejects is not:
    result = run_hook(*args, env=env)
    assert result.returncode == 2 and consul.requests == []
    consul.fail_next(1, status=400, body="Invalid check: Interval must be > 0")
    refused = run_hook(*CLI_REGISTER, env=env)
    assert (
        "Consul refused to register service 'web' (id 127.0.0.1_8080): 400 Invalid check: "
        "Interval must be > 0" in one_line_error(refused)
    )
    assert [r.path for r in consul.requests] == ["/v1/agent/service/register"]


def test_consul_down_fails_clearly_within_the_deadline(consul, base_env):
    consul.refuse_connections()
    started = time.monotonic()
    result = run_hook(*CLI_REGISTER, env=env_for(base_env, consul.addr, CONSUL_RETRY_DEADLINE="1s"))
    elapsed = time.monotonic() - started
    line = one_line_error(result)
    assert f"Consul at http://{consul.addr} unreachable for 1s (connection refused)" in line
    # Retried with back-off until the next wait would pass the deadline, then gave up.
    assert result.stderr.count("retrying") >= 3
    assert 0.5 <= elapsed < 3.0


def test_register_returns_only_once_the_catalog_lists_the_service(consul, base_env):
    consul.set_catalog_lag(0.6)
    started = time.monotonic()
    result = run_hook(*CLI_REGISTER, env=env_for(base_env, consul.addr))
    assert result.returncode == 0, result.stderr
    registered = consul.requests[0].time
    catalog_reads = [r.time for r in consul.requests if r.path.startswith("/v1/catalog/service/")]
    assert catalog_reads and catalog_reads[-1] - registered >= 0.6
    assert time.monotonic() - started >= 0.6


def test_catalog_wait_is_bounded_and_can_be_disabled(consul, base_env):
    consul.set_catalog_lag(30)
    bounded = run_hook("--catalog-wait", "300ms", *CLI_REGISTER, env=env_for(base_env, consul.addr))
    assert bounded.returncode == 0
    assert "did not list 127.0.0.1_8080 within 0.3s" in bounded.stderr
    before = len(consul.requests)
    off = run_hook(*CLI_REGISTER, env=env_for(base_env, consul.addr, CONSUL_CATALOG_WAIT="0"))
    assert off.returncode == 0 and "did not list" not in off.stderr
    assert not [r for r in consul.requests[before:] if r.path.startswith("/v1/catalog/")]


# -- mesos mode: the agent's /state -----------------------------------------------------------

STATE = {
    "frameworks": [
        {
            "id": "fw-1",
            "executors": [
                {
                    "id": "marathon-app.1",
                    "tasks": [
                        {
                            "id": "app.1",
                            "labels": [
                                {"key": "consul", "value": "app"},
                                {"key": "blue", "value": "tag"},
                            ],
                            "discovery": {
                                "ports": {
                                    "ports": [
                                        {"number": 31000, "name": "http", "labels": {"labels": []}},
                                        {
                                            "number": 31001,
                                            "name": "admin",
                                            "labels": {
                                                "labels": [{"key": "consul", "value": "app-admin"}]
                                            },
                                        },
                                    ]
                                }
                            },
                        }
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture
def mesos_state():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(STATE).encode() if self.path == "/state" else b"not found"
            self.send_response(200 if self.path == "/state" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_mesos_mode_registers_the_task_from_agent_state(consul, base_env, mesos_state):
    env = env_for(
        base_env,
        consul.addr,
        MESOS_AGENT_ENDPOINT=mesos_state,
        HOST="agent-1",
        MESOS_FRAMEWORK_ID="fw-1",
        MESOS_EXECUTOR_ID="marathon-app.1",
    )
    result = run_hook("register", "mesos", env=env)
    assert result.returncode == 0, result.stderr
    assert consul.registrations() == [
        {
            "ID": "agent-1_31001",
            "Name": "app-admin",
            "Tags": ["blue"],
            "Address": "agent-1",
            "Port": 31001,
        },
    ]
    assert run_hook("deregister", "mesos", env=env).returncode == 0
    assert consul.services() == {}


def test_mesos_mode_errors(consul, base_env, mesos_state):
    env = env_for(
        base_env,
        consul.addr,
        MESOS_AGENT_ENDPOINT=mesos_state,
        HOST="agent-1",
        MESOS_FRAMEWORK_ID="fw-1",
        MESOS_EXECUTOR_ID="marathon-other",
    )
    assert "runs no task for executor marathon-other" in one_line_error(
        run_hook("register", "mesos", env=env)
    )
    no_host = {k: v for k, v in env.items() if k != "HOST"}
    assert "HOST is not set" in one_line_error(run_hook("register", "mesos", env=no_host))
    down = run_hook("register", "mesos", "--agent-url", "http://127.0.0.1:1", env=env)
    assert "cannot read Mesos agent state at http://127.0.0.1:1/state" in one_line_error(down)
