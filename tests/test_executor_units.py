"""Unit tests of the executor's pure parts: configuration, commands, health judging, the
kill schedule, and the driver's bookkeeping (no agent, no Consul, no task)."""

from __future__ import annotations

import base64
import http.server
import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from executor.config import AgentEnv, ExecutorConfig, advertise_address
from executor.health import (
    HealthJudge,
    HealthSpec,
    ProbeResult,
    command_probe,
    http_probe,
    tcp_probe,
)
from executor.schedule import SHUTDOWN_MARGIN, KillSchedule, fit_budget, grace_from_policy
from executor.task import Command, command_from_task, group_alive, task_environment
from hooks.errors import ConfigError, SourceError

MESOS_ENV = {
    "MESOS_AGENT_ENDPOINT": "127.0.0.1:5051",
    "MESOS_FRAMEWORK_ID": "fw-0000",
    "MESOS_EXECUTOR_ID": "marathon-web.1",
    "MESOS_SANDBOX": "/tmp",
    "LIBPROCESS_IP": "10.0.3.7",
}

# -- configuration ---------------------------------------------------------------------------


def test_defaults_and_agent_facts():
    env = {
        **MESOS_ENV,
        "MESOS_CHECKPOINT": "1",
        "MESOS_RECOVERY_TIMEOUT": "15mins",
        "MESOS_SUBSCRIPTION_BACKOFF_MAX": "2secs",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
        "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "jwt",
    }
    config = ExecutorConfig.from_env(env)
    assert (config.propagation_delay, config.kill_grace_period) == (5.0, 5.0)
    assert config.consul_global_tag == "marathon"
    assert config.deregister_critical_after == 900.0
    assert config.address == "10.0.3.7"
    agent = config.agent
    assert agent.checkpoint is True
    assert (agent.recovery_timeout, agent.subscription_backoff_max) == (900.0, 2.0)
    assert agent.shutdown_grace_period == 5.0
    assert agent.auth_token == "jwt"
    assert "jwt" not in repr(config) and "jwt" not in str(config.describe())


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), (None, False)])
def test_checkpoint_is_on_only_for_1(value, expected):
    env = dict(MESOS_ENV)
    if value is not None:
        env["MESOS_CHECKPOINT"] = value
    assert AgentEnv.from_env(env).checkpoint is expected


def test_yaml_file_settings_with_the_environment_winning(tmp_path):
    path = tmp_path / "executor.yaml"
    path.write_text("propagation_delay: 2s\nkill_grace_period: 7\nconsul_global_tag: mesos\n")
    env = {**MESOS_ENV, "EXECUTOR_CONFIG": str(path), "EXECUTOR_KILL_GRACE_PERIOD": "3s"}
    config = ExecutorConfig.from_env(env)
    assert config.propagation_delay == 2.0
    assert config.kill_grace_period == 3.0
    assert config.consul_global_tag == "mesos"
    assert config.config_file == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("propagation_delay: soon\n", ": propagation_delay: invalid duration 'soon'"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("- a\n", "must hold a mapping"),
        ("a: [\n", "is not valid YAML"),
    ],
)
def test_bad_yaml_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "executor.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        ExecutorConfig.from_env({**MESOS_ENV, "EXECUTOR_CONFIG": str(path)})
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EXECUTOR_PROPAGATION_DELAY", "-1s", "invalid duration '-1s'"),
        ("EXECUTOR_KILL_GRACE_PERIOD", "5 s", "invalid duration"),
        ("EXECUTOR_LOG_LEVEL", "loud", "EXECUTOR_LOG_LEVEL: 'loud' is not one of"),
        ("EXECUTOR_LOG_FORMAT", "xml", "EXECUTOR_LOG_FORMAT: 'xml' is not one of"),
        ("EXECUTOR_ADVERTISE_IP", "host-7", "not an IP address"),
        ("MESOS_RECOVERY_TIMEOUT", "forever", "MESOS_RECOVERY_TIMEOUT"),
        ("MESOS_AGENT_ENDPOINT", "agent", "is not ip:port"),
        ("MESOS_EXECUTOR_ID", "", "MESOS_EXECUTOR_ID is not set"),
    ],
)
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError) as error:
        ExecutorConfig.from_env({**MESOS_ENV, name: value})
    assert message in str(error.value)


def test_yaml_is_imported_only_when_a_file_is_named():
    code = (
        "import sys; from executor.config import ExecutorConfig; "
        f"ExecutorConfig.from_env({MESOS_ENV!r}); print('yaml' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_the_executor_loads_neither_dataclasses_nor_tenacity():
    # Every task has an idle executor: those (with inspect) would cost each about 1.5 MB.
    code = (
        "import sys, executor.cli, executor.driver, executor.executor, executor.lifecycle, "
        "executor.supervisor, executor.task, hooks.consul.client, hooks.consul.registrar; "
        "print(sorted({'dataclasses', 'inspect', 'tenacity', 'yaml'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_advertise_address_order():
    env = {"LIBPROCESS_IP": "10.0.0.5", "HOST": "127.0.0.1"}
    assert advertise_address(env, "10.9.9.9") == "10.9.9.9"
    assert advertise_address(env) == "10.0.0.5"
    assert advertise_address({**env, "LIBPROCESS_IP": "0.0.0.0"}) == "127.0.0.1"
    assert advertise_address({"HOST": "localhost"}) == "127.0.0.1"


# -- the task's command and environment -------------------------------------------------------


def marathon_task(value: str, **extra) -> dict:
    return {
        "task_id": {"value": "t"},
        "executor": {"command": {"value": value, "shell": True}},
        **extra,
    }


def test_marathon_prefix_is_removed():
    task = marathon_task("chmod ug+rx '/opt/x' && exec '/opt/x' python3 -m http.server $PORT0")
    assert command_from_task(task).argv() == ["/bin/sh", "-c", "python3 -m http.server $PORT0"]


def test_task_command_wins_and_shell_false_is_argv():
    task = marathon_task(
        "chmod ug+rx '/opt/x' && exec '/opt/x' ignored",
        command={"value": "/bin/echo", "shell": False, "arguments": ["echo", "hi"]},
    )
    command = command_from_task(task)
    assert (command.shell, command.argv(), command.value) == (False, ["echo", "hi"], "/bin/echo")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("chmod ug+rx '/opt/x' && exec '/opt/x' ", "has no command"),
        ("/opt/x run", "does not start with Marathon's"),
        ("chmod ug+rx '/opt/x' && exec '/opt/y' cmd", "does not start with Marathon's"),
    ],
)
def test_missing_command_is_a_source_error(value, message):
    with pytest.raises(SourceError, match=message):
        command_from_task(marathon_task(value))


def test_task_environment_drops_only_the_agent_token():
    command = Command(
        "true",
        environment=(("APP_ENV", "prod"), ("PORT0", "31000")),
    )
    base = {
        "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "jwt",
        "CONSUL_HTTP_TOKEN": "app-token",
        "PORT0": "1",
    }
    env = task_environment(base, command)
    assert "MESOS_EXECUTOR_AUTHENTICATION_TOKEN" not in env
    assert env["CONSUL_HTTP_TOKEN"] == "app-token"
    assert (env["APP_ENV"], env["PORT0"]) == ("prod", "31000")


def test_secret_variables_are_not_passed_as_values():
    task = marathon_task(
        "chmod ug+rx '/x' && exec '/x' run",
    )
    task["executor"]["command"]["environment"] = {
        "variables": [
            {"name": "A", "value": "1", "type": "VALUE"},
            {"name": "B", "type": "SECRET", "secret": {"type": "REFERENCE"}},
            {"name": "C", "value": "3"},
        ]
    }
    assert command_from_task(task).environment == (("A", "1"), ("C", "3"))


# -- health checks ---------------------------------------------------------------------------


def spec(**overrides) -> HealthSpec:
    values = {
        "type": "HTTP",
        "http": {"port": 8080, "path": "health"},
        "delay_seconds": 0.0,
        "interval_seconds": 1.0,
        "timeout_seconds": 1.0,
        "grace_period_seconds": 10.0,
        "consecutive_failures": 3,
    }
    values.update(overrides)
    result = HealthSpec.from_task(values)
    assert result is not None
    return result


def test_health_spec_reads_the_mesos_fields():
    http = spec()
    assert (http.kind, http.url, http.consecutive_failures) == (
        "HTTP",
        "http://127.0.0.1:8080/health",
        3,
    )
    tcp = spec(type="TCP", tcp={"port": 9000})
    assert (tcp.kind, tcp.port) == ("TCP", 9000)
    command = spec(type="COMMAND", command={"value": "exit 0"})
    assert command.command is not None and command.command.argv()[-1] == "exit 0"
    assert HealthSpec.from_task(None) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"type": "GRPC"}, "health check type 'GRPC' is not supported"),
        ({"http": {"port": "web"}}, "health check port 'web' is not a port number"),
        ({"interval_seconds": "often"}, "interval_seconds 'often' is not a number"),
        ({"consecutive_failures": 0}, "consecutive_failures 0 is not a count"),
        ({"type": "COMMAND", "command": {}}, "has no command"),
    ],
)
def test_bad_health_checks(overrides, message):
    with pytest.raises(SourceError, match=message):
        spec(**overrides)


def test_judge_forgives_failures_during_grace_until_the_first_pass():
    now = [0.0]
    judge = HealthJudge(
        spec(grace_period_seconds=10.0, consecutive_failures=2), 0.0, lambda: now[0]
    )
    fail, ok = ProbeResult(False, "down"), ProbeResult(True, "up")
    assert judge.judge(fail) is None  # within grace, never passed
    first = judge.judge(ok)
    assert (first.healthy, first.changed) == (True, True)
    assert judge.judge(ok).changed is False
    again = judge.judge(fail)  # after a pass, failures count even within grace
    assert (again.healthy, again.changed, again.consecutive_failures, again.exhausted) == (
        False,
        True,
        1,
        False,
    )
    last = judge.judge(fail)
    assert (last.changed, last.consecutive_failures, last.exhausted) == (False, 2, True)


def test_judge_counts_failures_after_grace_without_a_pass():
    now = [11.0]
    judge = HealthJudge(spec(grace_period_seconds=10.0), 0.0, lambda: now[0])
    event = judge.judge(ProbeResult(False, "down"))
    assert event is not None and not event.healthy and event.consecutive_failures == 1


@pytest.fixture
def http_server():
    statuses = {"/ok": 200, "/moved": 302, "/missing": 404, "/broken": 500}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "status", "ok"),
    [("/ok", 200, True), ("/moved", 302, True), ("/missing", 404, False), ("/broken", 500, False)],
)
def test_http_probe_passes_200_to_399(http_server, path, status, ok):
    result = http_probe("http", "127.0.0.1", http_server, path, 1.0)
    assert result.ok is ok and result.output.endswith(f"HTTP {status}")


def test_tcp_probe(http_server):
    assert tcp_probe("127.0.0.1", http_server, 1.0).ok
    closed = tcp_probe("127.0.0.1", 1, 1.0)
    assert not closed.ok and "refused" in closed.output.lower()


def test_command_probe_timeout_kills_its_whole_group(tmp_path):
    command = Command("sleep 30 & echo $! > child; sleep 30")
    started = time.monotonic()
    result = command_probe(command, {"PATH": "/usr/bin:/bin"}, str(tmp_path), 0.3)
    assert not result.ok and "timed out" in result.output
    assert time.monotonic() - started < 3
    child = int((tmp_path / "child").read_text())
    assert not group_alive(child)  # the backgrounded sleep was in the check's group


def test_command_probe_result_and_output(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "WHO": "task"}
    passed = command_probe(Command("echo hello $WHO"), env, str(tmp_path), 2.0)
    assert passed.ok and "hello task" in passed.output
    failed = command_probe(Command("echo bad; exit 3"), env, str(tmp_path), 2.0)
    assert not failed.ok and "exit 3" in failed.output and "bad" in failed.output


# -- the kill schedule ----------------------------------------------------------------------------


def test_fit_budget_keeps_what_fits_and_scales_what_does_not():
    assert fit_budget(4.0, 1.0, 1.0, deregister=True) == (2.0, 1.0, 1.0)
    reserve, delay, grace = fit_budget(4.0, 5.0, 5.0, deregister=True)
    assert (reserve, delay, grace) == (1.0, 1.5, 1.5)
    assert fit_budget(-1.0, 5.0, 5.0, deregister=True) == (0.0, 0.0, 0.0)


def test_schedule_tightened_by_a_shutdown_says_so_with_numbers():
    schedule = KillSchedule(delay=5.0, grace=5.0)
    warning = schedule.tighten(deadline=100.0 + 5.0, now=100.0)  # 5s grace, 1s margin
    assert (schedule.deregister_budget, schedule.delay, schedule.grace) == (1.0, 1.5, 1.5)
    assert warning is not None
    assert "propagation delay 5s + kill grace period 5s do not fit" in warning
    assert "shortened to 1.5s + 1.5s" in warning
    assert schedule.tighten(deadline=200.0, now=100.0) is None  # a later deadline changes nothing


def test_schedule_tightened_in_the_middle_of_the_delay():
    schedule = KillSchedule(delay=10.0, grace=10.0)
    schedule.start_delay(now=0.0)
    schedule.tighten(deadline=5.0 + SHUTDOWN_MARGIN, now=1.0)  # 4s left for 9s + 10s
    assert schedule.delay_end == pytest.approx(1.0 + 4.0 * 9 / 19)
    schedule.start_grace(now=schedule.delay_end)
    assert schedule.grace_end == pytest.approx(5.0)


def test_schedule_tightened_during_the_grace_period():
    schedule = KillSchedule(delay=0.0, grace=10.0)
    schedule.start_grace(now=0.0)
    assert schedule.tighten(deadline=4.0, now=1.0) is not None
    assert schedule.grace_end == 4.0 - SHUTDOWN_MARGIN


@pytest.mark.parametrize(
    ("policy", "seconds"),
    [
        ({"grace_period": {"nanoseconds": 3_000_000_000}}, 3.0),
        ({"grace_period": {"nanoseconds": "1500000000"}}, 1.5),
        ({}, None),
        (None, None),
        ({"grace_period": {"nanoseconds": "x"}}, None),
    ],
)
def test_grace_from_policy(policy, seconds):
    assert grace_from_policy(policy) == seconds


# -- the driver's bookkeeping ------------------------------------------------------------------


def test_reconnect_delay_never_exceeds_the_backoff_max():
    from executor.driver import reconnect_delay

    rand = random.Random(7)
    delays = [reconnect_delay(attempt, 2.0, rand) for attempt in range(12)]
    assert all(0 < d <= 2.0 for d in delays)
    assert delays[0] <= 0.1 and max(delays[8:]) >= 1.0


@pytest.fixture
def driver():
    from executor.driver import ExecutorDriver

    env = {**MESOS_ENV, "MESOS_CHECKPOINT": "0", "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": "jwt"}

    class Recorder:
        def __getattr__(self, name):
            return lambda *args: None

    return ExecutorDriver(Recorder(), AgentEnv.from_env(env))


def test_driver_fixes_pymesos_flags(driver):
    assert driver.checkpoint is False  # pymesos reads "0" as on
    assert driver.grace_shutdown_period == 5.0  # pymesos: 0 when the variable is unset


def test_driver_reads_nothing_from_os_environ_itself():
    from executor.driver import ExecutorDriver

    # pymesos's own constructor asserts on a grace period that is not in Mesos units.
    agent = AgentEnv.from_env({**MESOS_ENV, "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "3"})
    driver = ExecutorDriver(object(), agent)
    assert (driver.grace_shutdown_period, driver.checkpoint) == (3.0, False)


def test_update_sent_while_disconnected_is_kept_for_the_next_subscribe(driver):
    key = driver.send_update({"task_id": {"value": "t"}, "state": "TASK_RUNNING"})
    assert key in driver.updates  # 'Not connected yet' did not lose it
    status = driver.updates[key]["status"]
    assert status["source"] == "SOURCE_EXECUTOR" and isinstance(status["timestamp"], float)
    assert uuid.UUID(bytes=base64.b64decode(status["uuid"])) == key

    request = driver.gen_request().decode()
    head, body = request.split("\r\n\r\n", 1)
    assert "Authorization: Bearer jwt" in head.splitlines()
    assert f"Content-Length: {len(body.encode())}" in head.splitlines()
    unacked = json.loads(body)["subscribe"]["unacknowledged_updates"]
    assert [u["status"]["uuid"] for u in unacked] == [status["uuid"]]

    assert not driver.wait_acknowledged(key, 0.01)
    driver.on_acknowledged({"task_id": {"value": "t"}, "uuid": status["uuid"]})
    assert key not in driver.updates and driver.wait_acknowledged(key, 0.01)


def test_kill_policy_is_kept_for_the_executor(driver):
    policy = {"grace_period": {"nanoseconds": 2_000_000_000}}
    driver.on_kill({"task_id": {"value": "t"}, "kill_policy": policy})
    assert driver.take_kill_policy("t") == policy
    assert driver.take_kill_policy("t") is None


def test_self_kill_sigkills_task_groups_first(driver):
    from executor import task

    group = subprocess.Popen(["sleep", "30"], start_new_session=True)
    task.GROUPS.add(group.pid)
    driver.local = True  # never SIGKILL the test runner's own group
    driver.grace_shutdown_period = 0.05
    driver.arm_self_kill()
    assert group.wait(5) == -signal.SIGKILL
    task.GROUPS.discard(group.pid)


# -- signals and lifecycle plumbing ----------------------------------------------------------


def test_signal_handler_never_takes_the_supervisor_lock_itself():
    from executor.cli import _handle_signals

    held = threading.Lock()  # stands for Supervisor._lock, held by wait() on the main thread
    stopped = threading.Event()

    class Supervisor:
        def stop_all(self, why):
            with held:
                stopped.set()

    class Driver:
        io_failed = False

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _handle_signals(Supervisor(), Driver())
        handler = signal.getsignal(signal.SIGTERM)
        with held:
            # Run on a thread only so that a regression fails instead of hanging the run.
            call = threading.Thread(target=handler, args=(signal.SIGTERM, None), daemon=True)
            call.start()
            call.join(5)
            assert not call.is_alive(), "the handler waited for the supervisor's lock"
            assert not stopped.is_set()
        assert stopped.wait(5)
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def lifecycle_for_tests(**ctx_fields):
    from types import SimpleNamespace

    from executor.lifecycle import TaskLifecycle

    config = SimpleNamespace(kill_grace_period=1.0, propagation_delay=0.0)
    ctx = SimpleNamespace(config=config, **ctx_fields)
    return TaskLifecycle({"task_id": {"value": "t"}}, ctx, lambda _: None)


def test_a_bounded_deregistration_closes_its_own_consul_client():
    closed = threading.Event()

    class Client:
        def close(self):
            closed.set()

    class Registrar:
        client = Client()

        def deregister(self, services, wait):
            return []

    lifecycle = lifecycle_for_tests(bounded_registrar=lambda budget: Registrar())
    lifecycle._consul_touched = True
    lifecycle._deregister(2.0)
    assert closed.wait(2)


@pytest.mark.parametrize("deadline_in", [None, 3.0, 0.5])
def test_a_task_ending_during_a_shutdown_deregisters_within_its_deadline(deadline_in):
    lifecycle = lifecycle_for_tests()
    budgets = []
    lifecycle._deregister = lambda budget: budgets.append(budget) or False
    lifecycle._finish = lambda ending: None
    lifecycle._ending = object()
    if deadline_in is not None:
        lifecycle._deadline = time.monotonic() + deadline_in
    lifecycle._after_exit()
    [budget] = budgets
    if deadline_in is None:
        assert budget is None  # Consul's own retry deadline
    else:
        expected = max(0.05, deadline_in - SHUTDOWN_MARGIN)
        assert expected - 0.2 <= budget <= expected
