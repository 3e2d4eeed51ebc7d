"""End to end: the real executor process, started by the Mesos agent double as an agent
starts it, running the real task app, registering in the Consul double.

Times: the doubles record ``time.monotonic()``; the task app records ``time.time()``, which
:func:`monotonic` converts (both clocks are system-wide on Linux).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.doubles.consul import ConsulDouble
from tests.doubles.mesos_agent import MesosAgentDouble, marathon_task_info

EXECUTOR = str(Path(sys.executable).parent / "consul-mesos-executor")
TASK_APP = str(Path(__file__).resolve().parent / "apps" / "task_app.py")
DELAY = 0.5  # EXECUTOR_PROPAGATION_DELAY
GRACE = 1.0  # EXECUTOR_KILL_GRACE_PERIOD


# -- helpers ---------------------------------------------------------------------------------


def monotonic(wall: float) -> float:
    """A ``time.time()`` stamp on the ``time.monotonic()`` clock."""
    return wall - (time.time() - time.monotonic())


def live_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def web_app(args: str = "", **extra) -> dict:
    """A Marathon app running the task app on its one port, registered as ``hello``."""
    app = {
        "id": "/web/hello",
        "cmd": f"{sys.executable} {TASK_APP} --port $PORT0 --events $MESOS_SANDBOX/events {args}",
        "labels": {"consul": "hello", "production": "tag"},
        "portDefinitions": [{"port": 0, "name": "http", "labels": {"public": "tag"}}],
    }
    app.update(extra)
    return app


def http_check(**overrides) -> dict:
    check = {
        "protocol": "MESOS_HTTP",
        "path": "/health",
        "portIndex": 0,
        "gracePeriodSeconds": 5,
        "intervalSeconds": 0.3,
        "timeoutSeconds": 1,
        "maxConsecutiveFailures": 2,
        "delaySeconds": 0,
    }
    check.update(overrides)
    return check


class Run:
    """One launched executor with its task, and what the doubles saw."""

    def __init__(self, agent: MesosAgentDouble, consul: ConsulDouble, task: dict, proc) -> None:
        self.agent = agent
        self.consul = consul
        self.task = task
        self.proc = proc
        self.task_id = proc.task_id
        ports = task.get("discovery", {}).get("ports", {}).get("ports", [])
        self.port = ports[0]["number"] if ports else None
        self.events_file = Path(proc.sandbox) / "events"

    def events(self, name: str | None = None) -> list[dict]:
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if name is None or e["event"] == name]

    def event(self, name: str, timeout: float = 10.0) -> dict:
        wait_until(lambda: self.events(name), timeout, f"task event {name!r}")
        return self.events(name)[0]

    def sent_at(self, record) -> float:
        """When the agent received the UPDATE call of ``record`` (the double records the
        status itself only after answering, so its time can trail the executor's next step).
        Valid while no update was re-sent."""
        calls = [c.time for c in self.agent.requests if c.type == "UPDATE"]
        return calls[self.agent.updates.index(record)]

    def update_times(self) -> list[tuple[str, bool | None]]:
        return [(u.state, u.healthy) for u in self.agent.updates]

    def registration_time(self) -> float:
        return next(
            r.time
            for r in self.consul.requests
            if r.method == "PUT" and r.path.startswith("/v1/agent/service/register")
        )

    def deregistration_time(self) -> float:
        return self.consul.deregistrations()[0][0]

    def exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait_exit(timeout)

    def task_group(self) -> int:
        """The task's process group, as the executor logged it when starting the task."""
        found = re.search(r"task started: pid (\d+)", self.log())
        assert found, "the executor never started the task"
        return int(found.group(1))

    def assert_nothing_survives(self) -> None:
        """No process of the task is left: its group, and the --child if it had one."""
        pgid = self.task_group()
        wait_until(lambda: not live_members(pgid), 5, f"task group {pgid} gone")
        for child in [e["child_pid"] for e in self.events("child")]:
            assert not alive(child), f"the task's child {child} survived"

    def log(self) -> str:
        return self.proc.stderr()


@pytest.fixture
def consul():
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def launch(tmp_path, consul):
    """``launch(app, agent=..., env=..., task_hook=...) -> Run``; everything stops afterwards."""
    agents: list[MesosAgentDouble] = []
    runs: list[Run] = []

    def start(
        app: dict,
        *,
        agent: dict | None = None,
        env: dict | None = None,
        task_hook=None,
        consul_double: ConsulDouble | None = None,
    ) -> Run:
        double = MesosAgentDouble(**(agent or {})).start()
        agents.append(double)
        target = consul_double or consul
        task = marathon_task_info(app, executor_path=EXECUTOR)
        if task_hook:
            task_hook(task)
        settings = {
            "CONSUL_HTTP_ADDR": target.addr,
            "CONSUL_RETRY_DEADLINE": "1s",
            "CONSUL_CATALOG_WAIT": "1s",
            "EXECUTOR_PROPAGATION_DELAY": f"{DELAY}s",
            "EXECUTOR_KILL_GRACE_PERIOD": f"{GRACE}s",
            "EXECUTOR_DEREGISTER_CRITICAL_SERVICE_AFTER": "1m",
            **(env or {}),
        }
        sandbox = tmp_path / f"sandbox{len(runs)}"
        proc = double.launch_executor(EXECUTOR, task, sandbox=str(sandbox), extra_env=settings)
        run = Run(double, target, task, proc)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.proc.poll() is None:
            run.proc.kill_group()
        for event in run.events("started"):
            for pid in live_members(event["pgid"]):
                os.kill(pid, signal.SIGKILL)
        for event in run.events("child"):
            if alive(event["child_pid"]):
                os.kill(event["child_pid"], signal.SIGKILL)
    for double in agents:
        double.stop()


# -- launch, register, kill ------------------------------------------------------------------


def test_registers_before_running_then_deregisters_before_sigterm(launch, consul):
    run = launch(web_app("--child"))
    running = run.agent.wait_for_update("TASK_RUNNING")
    assert run.update_times()[:2] == [("TASK_STARTING", None), ("TASK_RUNNING", None)]
    assert consul.registrations() == [
        {
            "ID": f"127.0.0.1_{run.port}",
            "Name": "hello",
            "Tags": ["marathon", "public", "production", f"marathon-task:{run.task_id}"],
            "Address": "127.0.0.1",
            "Port": run.port,
        }
    ]
    assert run.registration_time() < run.sent_at(running)
    run.event("child")

    run.agent.kill(run.task_id)
    killed = run.agent.wait_for_update("TASK_KILLED")
    killing = run.agent.wait_for_update("TASK_KILLING")
    deregistered = run.deregistration_time()
    sigterm = monotonic(run.event("sigterm")["time"])
    assert run.sent_at(killing) < deregistered < sigterm < killed.time
    assert sigterm - deregistered >= DELAY
    assert f"127.0.0.1_{run.port}" not in consul.services()
    assert run.exit() == 0
    assert killed.status["uuid"] in run.agent.acknowledged()
    run.assert_nothing_survives()
    log = run.log()
    for line in (
        "registered hello",
        "deregistered hello",
        "waiting 0.5s propagation delay",
        "SIGTERM sent to task group",
        "task exited",
    ):
        assert line in log
    assert "Traceback" not in log


def test_without_task_killing_capability_no_task_killing(launch):
    run = launch(web_app(), agent={"framework_capabilities": ()})
    run.agent.wait_for_update("TASK_RUNNING")
    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLED")
    assert "TASK_KILLING" not in [state for state, _ in run.update_times()]
    assert run.exit() == 0


def test_second_kill_changes_nothing(launch, consul):
    run = launch(web_app())
    run.agent.wait_for_update("TASK_RUNNING")
    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLING")
    run.agent.kill(run.task_id, grace_period=0)
    run.agent.wait_for_update("TASK_KILLED")
    states = [state for state, _ in run.update_times()]
    assert states.count("TASK_KILLING") == 1 and states.count("TASK_KILLED") == 1
    assert monotonic(run.event("sigterm")["time"]) - run.deregistration_time() >= DELAY
    assert len(consul.deregistrations()) == 1
    assert run.exit() == 0


@pytest.mark.parametrize(
    ("app_grace", "kill_grace", "expected"),
    [
        pytest.param(3, 0.6, 0.6, id="KILL kill_policy wins over TaskInfo"),
        pytest.param(0.8, None, 0.8, id="TaskInfo kill_policy wins over the default"),
    ],
)
def test_sigkill_only_after_the_grace_period(launch, app_grace, kill_grace, expected):
    app = web_app("--ignore-sigterm --child", taskKillGracePeriodSeconds=app_grace)
    run = launch(app, env={"EXECUTOR_KILL_GRACE_PERIOD": "5s", "EXECUTOR_PROPAGATION_DELAY": "0"})
    run.agent.wait_for_update("TASK_RUNNING")
    run.event("child")
    run.agent.kill(run.task_id, grace_period=kill_grace)
    killed = run.agent.wait_for_update("TASK_KILLED")
    sigterm = monotonic(run.event("sigterm")["time"])
    # The task ignored SIGTERM, so only SIGKILL (after the grace period) ended it.
    # (The task logs SIGTERM a moment after it was sent, hence the small tolerance.)
    assert expected - 0.05 <= killed.time - sigterm < expected + 0.8
    assert "SIGKILL sent to task group" in run.log()
    assert not run.events("exit")
    assert run.exit() == 0
    run.assert_nothing_survives()


def test_sigterm_to_the_executor_kills_gracefully(launch, consul):
    run = launch(web_app("--child"))
    run.agent.wait_for_update("TASK_RUNNING")
    run.event("child")
    os.kill(run.proc.pid, signal.SIGTERM)
    killed = run.agent.wait_for_update("TASK_KILLED")
    assert "SIGTERM" in killed.message
    assert monotonic(run.event("sigterm")["time"]) - run.deregistration_time() >= DELAY
    assert not consul.services()
    assert run.exit() == 0
    run.assert_nothing_survives()


def test_a_slow_consul_never_stalls_the_agent_connection(launch, consul):
    consul.set_delay(0.5)  # each Consul answer: registering takes ~1.5 s
    run = launch(web_app(), env={"CONSUL_RETRY_DEADLINE": "5s"})
    run.agent.wait_for_update("TASK_STARTING")
    consul.wait_for(lambda: bool(consul.requests), timeout=5)  # registration under way
    sent = time.monotonic()
    run.agent.kill(run.task_id)
    killing = run.agent.wait_for_update("TASK_KILLING")
    assert killing.time - sent < 0.4  # KILL was read and handled while Consul was busy
    killed = run.agent.wait_for_update("TASK_KILLED", timeout=15)
    assert "TASK_RUNNING" not in [state for state, _ in run.update_times()]
    assert consul.registrations() and run.deregistration_time() < killed.time
    assert not consul.services()
    assert run.exit() == 0


# -- the task ends by itself ------------------------------------------------------------------


@pytest.mark.parametrize(("code", "state"), [(0, "TASK_FINISHED"), (3, "TASK_FAILED")])
def test_task_exiting_by_itself_is_deregistered(launch, consul, code, state):
    run = launch(web_app(f"--child --exit-after 0.6 --exit-code {code}"))
    run.agent.wait_for_update("TASK_RUNNING")
    final = run.agent.wait_for_update(state)
    assert consul.deregistrations() and run.deregistration_time() < final.time
    assert not consul.services()
    if code:
        assert "exited with code 3" in final.message
    assert run.exit() == 0
    assert final.status["uuid"] in run.agent.acknowledged()
    run.assert_nothing_survives()


# -- health checks ------------------------------------------------------------------------------


def test_http_health_check_registers_on_first_pass_and_kills_on_failures(launch, consul):
    run = launch(web_app("--unhealthy-after 1.5", healthChecks=[http_check()]))
    healthy = run.agent.wait_for_update("TASK_RUNNING", healthy=True)
    assert run.update_times()[:3] == [
        ("TASK_STARTING", None),
        ("TASK_RUNNING", None),
        ("TASK_RUNNING", True),
    ]
    first_running = run.agent.updates[1]
    assert run.sent_at(first_running) < run.registration_time() < run.sent_at(healthy)
    service_id = f"127.0.0.1_{run.port}"
    assert consul.registrations()[0]["Check"] == {
        "CheckID": f"service:{service_id}",
        "HTTP": f"http://127.0.0.1:{run.port}/health",
        "Method": "GET",
        "Interval": "300ms",
        "Timeout": "1s",
        "Status": "passing",
        "DeregisterCriticalServiceAfter": "1m",
    }

    failed = run.agent.wait_for_update("TASK_FAILED", timeout=15)
    assert "health check failed 2 times in a row" in failed.message
    assert "503" in failed.message
    unhealthy = run.agent.wait_for_update("TASK_RUNNING", healthy=False)
    assert run.sent_at(unhealthy) < run.deregistration_time() < run.sent_at(failed)
    assert not consul.services()
    assert run.exit() == 0


def test_command_health_check_is_a_ttl_check_the_executor_passes(launch, consul, tmp_path):
    flag = tmp_path / "sick"
    check = {
        "protocol": "COMMAND",
        "command": {"value": f"test ! -e {flag}"},
        "gracePeriodSeconds": 5,
        "intervalSeconds": 0.3,
        "timeoutSeconds": 1,
        "maxConsecutiveFailures": 50,
        "delaySeconds": 0,
    }
    run = launch(web_app(healthChecks=[check]))
    run.agent.wait_for_update("TASK_RUNNING", healthy=True)
    service_id = f"127.0.0.1_{run.port}"
    body = consul.registrations()[0]["Check"]
    assert (
        body["CheckID"] == f"service:{service_id}" and body["TTL"] and body["Status"] == "passing"
    )

    def ttl_updates(status: str) -> list:
        return [
            r
            for r in list(consul.requests)
            if unquote(r.path) == f"/v1/agent/check/update/service:{service_id}"
            and (r.json() or {}).get("Status") == status
        ]

    consul.wait_for(lambda: ttl_updates("passing"), timeout=5)
    assert consul.checks()[f"service:{service_id}"]["Status"] == "passing"
    flag.touch()
    run.agent.wait_for_update("TASK_RUNNING", healthy=False)
    consul.wait_for(lambda: ttl_updates("critical"), timeout=5)
    assert consul.checks()[f"service:{service_id}"]["Status"] == "critical"

    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLED")
    assert run.exit() == 0


# -- Consul refuses or fails --------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["acl", "down"])
def test_registration_refused_kills_the_task(launch, fault):
    with ConsulDouble(acl_token="secret") as guarded:
        if fault == "down":
            guarded.refuse_connections(True)
        run = launch(
            web_app("--child"),
            consul_double=guarded,
            env={"CONSUL_HTTP_TOKEN": "wrong"} if fault == "acl" else None,
        )
        failed = run.agent.wait_for_update("TASK_FAILED", timeout=15)
        assert failed.message.startswith("Consul registration failed:")
        expected = "403 ACL not found" if fault == "acl" else "unreachable"
        assert expected in failed.message
        assert "TASK_RUNNING" not in [state for state, _ in run.update_times()]
        if fault == "down":
            guarded.refuse_connections(False)
        assert not guarded.services()
        assert run.exit() == 0
        run.assert_nothing_survives()


def test_deregistration_failure_does_not_block_the_kill(launch, consul):
    run = launch(web_app())
    run.agent.wait_for_update("TASK_RUNNING")
    consul.refuse_connections(True)
    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLED", timeout=15)
    run.event("sigterm")
    assert run.exit() == 0
    log = run.log()
    assert "cannot deregister" in log
    assert "Consul keeps it until it is deregistered by hand" in log


# -- bad input ------------------------------------------------------------------------------------


def _bad_port(task: dict) -> None:
    task["discovery"]["ports"]["ports"][0]["number"] = "http"


def _bad_check(task: dict) -> None:
    task["health_check"] = {"type": "GRPC", "grpc": {"port": 1}, "interval_seconds": 1.0}


def _bad_label(task: dict) -> None:
    task["labels"]["labels"].append({"key": "team", "value": "web\udcff"})


def _no_command(task: dict) -> None:
    command = task["executor"]["command"]
    command["value"] = command["value"].split(" && exec ")[0] + f" && exec '{EXECUTOR}' "


@pytest.mark.parametrize(
    ("app", "hook", "message"),
    [
        pytest.param(web_app(), _no_command, "the task has no command", id="no command"),
        pytest.param(
            web_app(labels={"consul": "hello", "{port:admin}": "tag"}),
            None,
            "names port 'admin'",
            id="unknown port name",
        ),
        pytest.param(web_app(), _bad_port, "is not a port number", id="non-numeric port"),
        pytest.param(web_app(), _bad_check, "health check type 'GRPC'", id="unknown check"),
        pytest.param(web_app(), _bad_label, "is not valid UTF-8", id="non-UTF-8 label"),
    ],
)
def test_bad_task_info_fails_the_task_with_a_message(launch, consul, app, hook, message):
    run = launch(app, task_hook=hook)
    failed = run.agent.wait_for_update("TASK_FAILED")
    assert message in failed.message
    assert "\n" not in failed.message
    assert [state for state, _ in run.update_times()] == ["TASK_FAILED"]
    assert not consul.registrations()
    assert run.exit() == 0
    assert not run.events("started")
    assert "Traceback" not in run.log()


# -- SHUTDOWN -------------------------------------------------------------------------------------


def test_shutdown_shortens_the_sequence_to_fit_the_grace_period(launch, consul):
    run = launch(
        web_app("--ignore-sigterm --child"),
        agent={"shutdown_grace_period": "2secs"},
        env={"EXECUTOR_PROPAGATION_DELAY": "2s", "EXECUTOR_KILL_GRACE_PERIOD": "2s"},
    )
    run.agent.wait_for_update("TASK_RUNNING")
    run.event("child")
    start = time.monotonic()
    run.agent.shutdown()
    killed = run.agent.wait_for_update("TASK_KILLED")
    assert killed.time - start < 2.0 - 0.5  # within the grace period, with a margin left
    assert consul.deregistrations() and not consul.services()
    assert run.exit() == 0
    assert "shortened to" in run.log()
    run.assert_nothing_survives()


def test_self_kill_at_the_end_of_the_grace_period_kills_the_task_first(launch):
    run = launch(web_app("--ignore-sigterm --child"), agent={"shutdown_grace_period": "0secs"})
    run.agent.wait_for_update("TASK_RUNNING")
    run.event("child")
    run.agent.shutdown()
    # With no grace at all, the timer (SIGKILL to the task groups, then to the executor's own
    # group) and the executor's own fast path (task SIGKILLed, TASK_KILLED, exit 1 without
    # waiting for an ACK it has no time for) race; either way nothing of the task survives.
    code = run.exit()
    if code == -signal.SIGKILL:
        assert "SIGKILL: the shutdown grace period" in run.log()
    else:
        assert code == 1 and "SIGKILL sent to task group" in run.log()
    run.assert_nothing_survives()


# -- the agent connection ----------------------------------------------------------------------


def test_bearer_token_on_every_call_and_hidden_from_the_task(launch):
    app = web_app()
    app["cmd"] = "env > $MESOS_SANDBOX/task.env; " + app["cmd"]
    run = launch(app, agent={"auth_token": "s3cr3t-jwt"})
    run.agent.wait_for_update("TASK_RUNNING")
    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLED")
    assert run.exit() == 0
    calls = list(run.agent.requests)
    assert {c.type for c in calls} >= {"SUBSCRIBE", "UPDATE"}
    assert all(c.headers.get("Authorization") == "Bearer s3cr3t-jwt" for c in calls)
    task_env = (Path(run.proc.sandbox) / "task.env").read_text()
    assert "MESOS_EXECUTOR_AUTHENTICATION_TOKEN" not in task_env
    assert "s3cr3t-jwt" not in run.log()


def test_agent_refusing_the_token_ends_the_executor(launch):
    run = launch(
        web_app(),
        agent={"auth_token": "s3cr3t-jwt"},
        env={"MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "stale"},
    )
    assert run.exit() == 1
    assert "the connection to the agent failed for good" in run.log()
    assert not run.agent.updates


def test_reconnects_with_unacknowledged_updates_and_keeps_the_task(launch, consul):
    run = launch(web_app(), agent={"subscription_backoff_max": "500ms"})
    run.agent.set_auto_ack(False)
    run.agent.wait_for_update("TASK_RUNNING")
    sent = [u.uuid for u in run.agent.updates]
    pid = run.event("started")["pid"]

    down = time.monotonic()
    run.agent.restart(down_for=1.0)
    wait_until(lambda: len(run.agent.subscriptions) >= 2, 5, "re-subscription")
    again = [c for c in run.agent.requests if c.type == "SUBSCRIBE"][-1].time
    assert again - down < 1.0 + 0.5 + 0.3  # within backoff max of the agent coming back
    resubscribe = run.agent.subscriptions[-1]["subscribe"]
    assert [u["status"]["uuid"] for u in resubscribe["unacknowledged_updates"]] == sent
    assert [t["task_id"]["value"] for t in resubscribe["unacknowledged_tasks"]] == [run.task_id]
    assert alive(pid) and not run.events("sigterm")
    assert f"127.0.0.1_{run.port}" in consul.services()

    run.agent.set_auto_ack(True)
    run.agent.kill(run.task_id)
    run.agent.wait_for_update("TASK_KILLED")
    assert run.exit() == 0


def test_update_sent_while_disconnected_arrives_with_the_next_subscribe(launch, consul):
    run = launch(web_app(), agent={"subscription_backoff_max": "500ms"})
    run.agent.wait_for_update("TASK_RUNNING")
    started = run.event("started")
    run.agent.restart(down_for=1.5)
    os.kill(started["pid"], signal.SIGTERM)  # the task ends on its own meanwhile
    finished = run.agent.wait_for_update("TASK_FINISHED", timeout=10)
    resubscribe = run.agent.subscriptions[-1]["subscribe"]
    assert finished.uuid in [u["status"]["uuid"] for u in resubscribe["unacknowledged_updates"]]
    assert not consul.services()
    assert run.exit() == 0


def test_without_checkpointing_a_lost_agent_stops_the_task(launch, consul):
    run = launch(web_app("--child"), agent={"checkpoint": False})
    run.agent.wait_for_update("TASK_RUNNING")
    run.event("child")
    run.agent.restart(down_for=30)
    run.event("sigterm")
    assert run.exit() != 0  # its TASK_KILLED could not be delivered
    assert not consul.services()
    run.assert_nothing_survives()


def test_gives_up_after_the_recovery_timeout(launch, consul):
    run = launch(
        web_app(), agent={"recovery_timeout": "1secs", "subscription_backoff_max": "300ms"}
    )
    run.agent.wait_for_update("TASK_RUNNING")
    lost = time.monotonic()
    run.agent.restart(down_for=30)
    sigterm = monotonic(run.event("sigterm")["time"])
    assert sigterm - lost >= 1.0
    assert run.exit() != 0
    assert "recovery timeout" in run.log()
    assert not consul.services()


# -- configuration ---------------------------------------------------------------------------


def test_invalid_setting_stops_before_subscribing(launch):
    run = launch(web_app(), env={"EXECUTOR_PROPAGATION_DELAY": "soon"})
    assert run.exit() == 2
    errors = [line for line in run.log().splitlines() if line.strip()]
    assert errors == [
        "consul-mesos-executor: error: EXECUTOR_PROPAGATION_DELAY: invalid duration 'soon' "
        "(use Go syntax like 10s, 1m30s, 250ms, or seconds)"
    ]
    assert not run.agent.requests


def test_missing_mesos_variable_is_one_line(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MESOS_FRAMEWORK_ID": "f"}
    result = subprocess.run([EXECUTOR], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "consul-mesos-executor: error: MESOS_AGENT_ENDPOINT is not set "
        "(the Mesos agent sets it for executors)"
    ]


def test_python_dash_m_executor_runs():
    result = subprocess.run(
        [sys.executable, "-m", "executor", "--version"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout.startswith("consul-mesos-executor ")
