"""Checks of the Mesos agent double itself, driven by a raw client instead of the real executor."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.mesos_agent import ExecutorProcess, MesosAgentDouble, marathon_task_info

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
TASK_APP = Path(__file__).resolve().parent / "apps" / "task_app.py"

APP = {
    "id": "/web/hello",
    "cmd": "python3 -m http.server $PORT0",
    "env": {"APP_ENV": "production"},
    "labels": {"consul": "hello"},
    "portDefinitions": [{"port": 0, "name": "http", "labels": {"public": "tag"}}],
}
# Stands in for the executor: records its environment and arguments, then idles until killed.
FAKE_EXECUTOR = '#!/bin/sh\nenv > "$MESOS_SANDBOX/env.txt"\necho "args: $*"\nexec sleep 60\n'


class RawSubscription:
    """SUBSCRIBE the way pymesos does: a hand-written HTTP/1.1 request with `Connection: close`,
    then manual de-chunking and RecordIO parsing. Keeps the raw chunks for inspection."""

    def __init__(self, endpoint: str, call: dict, headers: dict[str, str] | None = None) -> None:
        host, port = endpoint.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        body = json.dumps(call).encode()
        head = [
            "POST /api/v1/executor HTTP/1.1",
            f"Host: {endpoint}",
            "Content-Type: application/json",
            "Accept: application/json",
            "Connection: close",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        self._buffer = b""
        status_line, *header_lines = self._read_until(b"\r\n\r\n").decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in header_lines)
        }
        self.body = self._read_exact(int(self.headers.get("content-length", 0)))
        self.chunks: list[bytes] = []
        self._records = b""

    def __enter__(self) -> RawSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def next_event(self) -> dict:
        """The next RecordIO event; EOFError when the stream ends."""
        while True:
            prefix = re.match(rb"(\d+)\n", self._records)
            if prefix and len(self._records) >= prefix.end() + int(prefix[1]):
                end = prefix.end() + int(prefix[1])
                payload, self._records = self._records[prefix.end() : end], self._records[end:]
                return json.loads(payload)
            size = int(self._read_until(b"\r\n"), 16)
            if size == 0:
                raise EOFError("last chunk")
            chunk = self._read_exact(size + 2)[:-2]
            self.chunks.append(chunk)
            self._records += chunk

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self._buffer += data

    def _read_until(self, separator: bytes) -> bytes:
        while separator not in self._buffer:
            self._receive()
        data, self._buffer = self._buffer.split(separator, 1)
        return data

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._receive()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def post(
    agent: MesosAgentDouble,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
    method: str = "POST",
) -> tuple[int, str]:
    host, port = agent.endpoint.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    all_headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
    try:
        connection.request(method, "/api/v1/executor", body=data, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def launch(agent: MesosAgentDouble, tmp_path: Path, **kwargs: Any) -> ExecutorProcess:
    script = tmp_path / "fake-executor"
    script.write_text(FAKE_EXECUTOR)  # the launch command's chmod makes it executable
    task = marathon_task_info(APP, executor_path=str(script))
    return agent.launch_executor(str(script), task, sandbox=str(tmp_path / "sandbox"), **kwargs)


def envelope(agent: MesosAgentDouble, proc: ExecutorProcess, call_type: str, **body: Any) -> dict:
    return {
        "type": call_type,
        "framework_id": {"value": agent.framework_id},
        "executor_id": {"value": proc.executor_id},
        **body,
    }


def task_status(proc: ExecutorProcess, state: str = "TASK_RUNNING", **fields: Any) -> dict:
    return {
        "task_id": {"value": proc.task_id},
        "state": state,
        "source": "SOURCE_EXECUTOR",
        "uuid": base64.b64encode(uuid.uuid4().bytes).decode(),
        "timestamp": time.time(),
        **fields,
    }


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def agent() -> Any:
    with MesosAgentDouble() as double:
        yield double


@pytest.mark.parametrize("checkpoint", [True, False])
def test_launch_runs_marathon_command_with_agent_environment(
    tmp_path: Path, checkpoint: bool
) -> None:
    with MesosAgentDouble(checkpoint=checkpoint, auth_token="t0ken") as agent:
        proc = launch(agent, tmp_path, extra_env={"APP_ENV": "test"})
        agent.wait_for(lambda: "args:" in proc.stdout())
        lines = (Path(proc.sandbox) / "env.txt").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)

        assert proc.stdout() == f"args: python3 -m http.server {env['PORT0']}\n"
        assert os.getpgid(proc.pid) == proc.pid  # its own session, away from pytest's group
        expected = {
            "MESOS_AGENT_ENDPOINT": agent.endpoint,
            "MESOS_FRAMEWORK_ID": agent.framework_id,
            "MESOS_EXECUTOR_ID": f"marathon-{proc.task_id}",
            "MESOS_DIRECTORY": proc.sandbox,
            "MESOS_SANDBOX": proc.sandbox,
            "MESOS_CHECKPOINT": "1" if checkpoint else "0",
            "MESOS_RECOVERY_TIMEOUT": "15mins" if checkpoint else None,
            "MESOS_SUBSCRIPTION_BACKOFF_MAX": "2secs" if checkpoint else None,
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
            "MESOS_SLAVE_ID": agent.agent_id,
            "MESOS_SLAVE_PID": f"slave(1)@{agent.endpoint}",
            "MESOS_HTTP_COMMAND_EXECUTOR": "0",
            "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "t0ken",
            "LIBPROCESS_IP": "127.0.0.1",
            "MESOS_TASK_ID": proc.task_id,
            "PORT_HTTP": env["PORT0"],
            "APP_ENV": "test",  # extra_env wins over the app's env
            "PATH": os.environ["PATH"],
        }
        assert {name: env.get(name) for name in expected} == expected

        with pytest.raises(AssertionError, match="still running"):
            proc.wait_exit(0.1)
        assert proc.proc.returncode == -signal.SIGKILL


def test_subscribe_launch_update_and_events(agent: MesosAgentDouble, tmp_path: Path) -> None:
    proc = launch(agent, tmp_path)
    with RawSubscription(agent.endpoint, envelope(agent, proc, "SUBSCRIBE", subscribe={})) as s:
        assert s.status == 200
        assert s.headers["content-type"] == "application/json"
        assert s.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in s.headers
        subscribed = s.next_event()["subscribed"]
        assert subscribed["framework_info"]["id"] == {"value": agent.framework_id}
        assert subscribed["framework_info"]["checkpoint"] is True
        assert subscribed["framework_info"]["capabilities"] == [{"type": "TASK_KILLING_STATE"}]
        assert subscribed["executor_info"]["executor_id"] == {"value": proc.executor_id}
        assert subscribed["agent_info"]["id"] == {"value": agent.agent_id}
        launched = s.next_event()
        assert launched["type"] == "LAUNCH"
        assert launched["launch"]["task"]["task_id"] == {"value": proc.task_id}
        assert len(s.chunks) == 1  # SUBSCRIBED and LAUNCH shared one chunk

        running = task_status(proc, healthy=True)
        update = envelope(agent, proc, "UPDATE", update={"status": running})
        assert post(agent, update) == (202, "")
        assert s.next_event() == {
            "type": "ACKNOWLEDGED",
            "acknowledged": {"task_id": running["task_id"], "uuid": running["uuid"]},
        }
        assert [len(chunk) for chunk in s.chunks[1:2]] == [1]  # the length prefix was split
        assert len(s.chunks) == 4
        assert agent.wait_for_update("TASK_RUNNING", healthy=True).status == running
        assert agent.acknowledged() == [running["uuid"]]

        agent.kill(proc.task_id, grace_period=2.5)
        assert s.next_event() == {
            "type": "KILL",
            "kill": {
                "task_id": {"value": proc.task_id},
                "kill_policy": {"grace_period": {"nanoseconds": 2_500_000_000}},
            },
        }
        agent.shutdown()
        assert s.next_event() == {"type": "SHUTDOWN"}
        message = envelope(agent, proc, "MESSAGE", message={"data": "aGk="})
        assert post(agent, message) == (202, "")
        assert post(agent, envelope(agent, proc, "HEARTBEAT")) == (202, "")

    host, port = agent.endpoint.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/slave(1)/state")
    state = json.loads(connection.getresponse().read())
    connection.close()
    [framework] = state["frameworks"]
    [executor] = framework["executors"]
    [task] = executor["tasks"]
    assert (state["id"], framework["id"], executor["id"]) == (
        agent.agent_id,
        agent.framework_id,
        proc.executor_id,
    )
    assert task["state"] == "TASK_RUNNING"
    assert task["labels"] == [{"key": "consul", "value": "hello"}]
    assert task["discovery"]["ports"]["ports"][0]["name"] == "http"
    assert task["resources"]["ports"].startswith("[")


def test_rejected_calls(agent: MesosAgentDouble, tmp_path: Path) -> None:
    proc = launch(agent, tmp_path)

    def update(**fields: Any) -> dict:
        return envelope(agent, proc, "UPDATE", update={"status": task_status(proc, **fields)})

    assert post(agent, update()) == (403, "Executor is not subscribed")
    call = envelope(agent, proc, "SUBSCRIBE", subscribe={})
    with RawSubscription(agent.endpoint, call) as s:
        s.next_event()
        no_uuid = update()
        del no_uuid["update"]["status"]["uuid"]
        invalid = "Failed to validate Executor::Call: "
        cases = {
            "no content type": (update(), {"content_type": None}, 400, "Expecting 'Content-Type'"),
            "text/plain": (update(), {"content_type": "text/plain"}, 415, "Expecting 'Content"),
            "GET": (None, {"method": "GET"}, 405, "Expecting one of { 'POST' }"),
            "bad JSON": (b"{not json", {}, 400, "Failed to parse body into JSON"),
            "no uuid": (no_uuid, {}, 400, invalid + "Expecting 'uuid' to be present"),
            "source": (update(source="SOURCE_AGENT"), {}, 400, invalid + "Received Call"),
            "staging": (update(state="TASK_STAGING"), {}, 400, invalid + "Received TASK_STAGING"),
            "framework": (
                {**update(), "framework_id": {"value": "other"}},
                {},
                400,
                "Framework cannot be found",
            ),
            "executor": (
                {**update(), "executor_id": {"value": "other"}},
                {},
                400,
                "Executor cannot be found",
            ),
        }
        for name, (body, options, status, text) in cases.items():
            got_status, got_text = post(agent, body, **options)
            assert (got_status, got_text[: len(text)]) == (status, text), name
    assert agent.updates == []


def test_authentication_required_when_token_set(tmp_path: Path) -> None:
    with MesosAgentDouble(auth_token="t0ken") as agent:
        proc = launch(agent, tmp_path)
        call = envelope(agent, proc, "SUBSCRIBE", subscribe={})
        with RawSubscription(agent.endpoint, call) as refused:
            assert refused.status == 401
        bearer = {"Authorization": "Bearer t0ken"}
        with RawSubscription(agent.endpoint, call, bearer) as s:
            assert s.status == 200
            assert s.next_event()["type"] == "SUBSCRIBED"
            update = envelope(agent, proc, "UPDATE", update={"status": task_status(proc)})
            assert post(agent, update)[0] == 401
            assert post(agent, update, headers={"Authorization": "Bearer wrong"})[0] == 401
            assert post(agent, update, headers=bearer) == (202, "")
        assert [(c.type, c.headers.get("authorization")) for c in agent.requests] == [
            ("SUBSCRIBE", None),
            ("SUBSCRIBE", "Bearer t0ken"),
            ("UPDATE", None),
            ("UPDATE", "Bearer wrong"),
            ("UPDATE", "Bearer t0ken"),
        ]


def test_resubscribe_records_unacknowledged_and_acks_them(
    agent: MesosAgentDouble, tmp_path: Path
) -> None:
    proc = launch(agent, tmp_path)
    agent.set_auto_ack(False)
    running = task_status(proc)
    update = envelope(agent, proc, "UPDATE", update={"status": running})
    with RawSubscription(agent.endpoint, envelope(agent, proc, "SUBSCRIBE", subscribe={})) as s:
        s.next_event()
        task = s.next_event()["launch"]["task"]
        assert post(agent, update) == (202, "")
        agent.wait_for_update("TASK_RUNNING")
        assert agent.acknowledged() == []
        agent.drop_connection()
        with pytest.raises(EOFError):
            s.next_event()
    agent.wait_for(lambda: not agent.is_subscribed())
    assert post(agent, update) == (403, "Executor is not subscribed")

    agent.set_auto_ack(True)
    unacknowledged = {
        "unacknowledged_tasks": [task],
        "unacknowledged_updates": [{"status": running}],
    }
    call = envelope(agent, proc, "SUBSCRIBE", subscribe=unacknowledged)
    with RawSubscription(agent.endpoint, call) as s:
        assert s.next_event()["type"] == "SUBSCRIBED"
        # Next comes the ACK for the re-sent update: no second LAUNCH.
        assert s.next_event()["acknowledged"]["uuid"] == running["uuid"]
    assert agent.subscriptions[1]["subscribe"] == unacknowledged
    assert len(agent.updates) == 1  # the duplicate is not recorded twice
    assert agent.acknowledged() == [running["uuid"]]


def test_refuse_subscriptions_with_503_then_connection_refused(
    agent: MesosAgentDouble, tmp_path: Path
) -> None:
    proc = launch(agent, tmp_path)
    call = envelope(agent, proc, "SUBSCRIBE", subscribe={})
    agent.refuse_subscriptions(0.3, 503)
    with RawSubscription(agent.endpoint, call) as refused:
        assert (refused.status, refused.body) == (503, b"Agent has not finished recovery")

    started = time.monotonic()
    agent.refuse_subscriptions(0.3)
    with pytest.raises(ConnectionRefusedError):
        RawSubscription(agent.endpoint, call)

    def subscribes() -> bool:
        try:
            with RawSubscription(agent.endpoint, call) as s:
                return s.status == 200 and s.next_event()["type"] == "SUBSCRIBED"
        except ConnectionRefusedError:
            return False

    agent.wait_for(subscribes, timeout=5)
    assert time.monotonic() - started >= 0.3


def test_marathon_task_info_matches_reference() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not there")
    reference = json.loads((REFERENCE / "marathon-taskinfo.json").read_text())
    markdown = (REFERENCE / "marathon-taskinfo.md").read_text()
    app = json.loads(re.search(r"```json\n(.*?)```", markdown, re.S)[1])
    variables = reference["executor"]["command"]["environment"]["variables"]
    reference_env = {variable["name"]: variable["value"] for variable in variables}
    ports = [int(reference_env["PORT0"]), int(reference_env["PORT1"])]

    task = marathon_task_info(
        app, executor_path=app["executor"], host=reference_env["HOST"], ports=ports
    )

    task_id = task["task_id"]["value"]
    app_part, _, task_uuid = task_id.partition(".")
    assert app_part == "web_hello"
    assert uuid.UUID(task_uuid).version == 1
    # Swap in the reference's fresh IDs and timestamp; everything else must be identical.
    task = json.loads(json.dumps(task).replace(task_id, reference["task_id"]["value"]))
    task["agent_id"] = reference["agent_id"]
    task["executor"]["framework_id"] = reference["executor"]["framework_id"]
    [version] = [
        v
        for v in task["executor"]["command"]["environment"]["variables"]
        if v["name"] == "MARATHON_APP_VERSION"
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", version["value"])
    version["value"] = reference_env["MARATHON_APP_VERSION"]
    assert task == reference


def test_marathon_task_info_defaults_and_other_checks() -> None:
    app = {
        "id": "/db",
        "cmd": "run",
        "portDefinitions": [{"port": 0}, {"port": 0, "protocol": "udp,tcp"}],
        "healthChecks": [{"protocol": "HTTP"}, {"protocol": "MESOS_TCP", "portIndex": 1}],
    }
    task = marathon_task_info(app, executor_path="/x")
    env = {v["name"]: v["value"] for v in task["executor"]["command"]["environment"]["variables"]}
    ports = [int(env["PORT0"]), int(env["PORT1"])]
    assert ports[0] != ports[1] and env["PORTS"] == f"{ports[0]},{ports[1]}"
    assert env[f"PORT_{ports[1]}"] == str(ports[1])
    assert task["health_check"] == {
        "tcp": {"port": ports[1]},
        "delay_seconds": 15.0,
        "interval_seconds": 60.0,
        "timeout_seconds": 20.0,
        "consecutive_failures": 3,
        "grace_period_seconds": 300.0,
        "type": "TCP",
    }
    assert [p["protocol"] for p in task["discovery"]["ports"]["ports"]] == ["tcp", "udp", "tcp"]
    assert "kill_policy" not in task and "labels" not in task
    assert env["MARATHON_APP_LABELS"] == ""

    app["healthChecks"] = [{"protocol": "COMMAND", "command": {"value": "true"}}]
    task = marathon_task_info(app, executor_path="/x", ports=[31000, 31001])
    assert task["health_check"]["command"] == {"value": "true", "shell": True}
    assert task["resources"][-1]["ranges"]["range"] == [{"begin": 31000, "end": 31001}]


def test_task_app_serves_health_and_logs_lifecycle(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events_file = tmp_path / "events.jsonl"
    command = [sys.executable, str(TASK_APP), "--port", str(port), "--events", str(events_file)]
    app = subprocess.Popen(
        [*command, "--unhealthy-after", "1", "--child"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )

    def events() -> list[dict]:
        text = events_file.read_text() if events_file.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def health() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        wait_until(lambda: [e["event"] for e in events()] == ["started", "child"])
        assert health() == 200
        wait_until(lambda: health() == 503)
        app.send_signal(signal.SIGTERM)
        assert app.wait(5) == 0
        log = events()
        assert [e["event"] for e in log] == ["started", "child", "sigterm", "exit"]
        assert os.getpgid(log[1]["child_pid"]) == app.pid  # left alive, in the app's group
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may be empty already
            os.killpg(app.pid, signal.SIGKILL)
        app.wait(5)
