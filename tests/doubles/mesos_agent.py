"""A Mesos agent double that speaks the v1 executor HTTP API, for end-to-end executor tests.

Mesos cannot run here, so tests start the real executor process with the environment an agent
would give it and point it at this double. It follows shared/reference/mesos-executor.md
(sections 1-6) and marathon-taskinfo.md:

* ``POST /api/v1/executor`` (or ``/slave(1)/api/v1/executor``) takes JSON calls. SUBSCRIBE gets
  a never-ending chunked RecordIO stream of events; UPDATE, MESSAGE and HEARTBEAT get ``202``.
* ``GET /state`` (or ``/slave(1)/state``) describes the launched tasks like an agent's /state.

Typical use::

    with MesosAgentDouble() as agent:
        task = marathon_task_info(app, executor_path=EXECUTOR)
        proc = agent.launch_executor(EXECUTOR, task, sandbox=str(tmp_path / "sandbox"))
        agent.wait_for_update("TASK_RUNNING", healthy=True)
        agent.kill(proc.task_id)
        agent.wait_for_update("TASK_KILLED")
        assert proc.wait_exit(10) == 0
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import datetime
import json
import os
import queue
import re
import select
import signal
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple

JSON = dict[str, Any]

EXECUTOR_API_PATHS = frozenset({"/api/v1/executor", "/slave(1)/api/v1/executor"})
STATE_PATHS = frozenset({"/state", "/state.json", "/slave(1)/state", "/slave(1)/state.json"})
RECOVERING = "Agent has not finished recovery"

# marathon_task_info() puts these where the master would fill in real IDs; launch_executor()
# replaces them with the double's own.
PLACEHOLDER_FRAMEWORK_ID = "9aaa9d0d-e00d-444f-bfbd-23dd197939a0-0000"
PLACEHOLDER_AGENT_ID = "6f1f7e3a-1c2b-4d5e-8f90-0a1b2c3d4e5f-S0"

_CALL_TYPES = frozenset({"SUBSCRIBE", "UPDATE", "MESSAGE", "HEARTBEAT"})
_TASK_STATES = frozenset(
    {
        "TASK_STAGING",
        "TASK_STARTING",
        "TASK_RUNNING",
        "TASK_KILLING",
        "TASK_FINISHED",
        "TASK_FAILED",
        "TASK_KILLED",
        "TASK_ERROR",
        "TASK_LOST",
        "TASK_DROPPED",
        "TASK_UNREACHABLE",
        "TASK_GONE",
        "TASK_GONE_BY_OPERATOR",
        "TASK_UNKNOWN",
    }
)


@dataclass
class StatusRecord:
    """One TaskStatus the executor sent, as the agent received it."""

    time: float  # time.monotonic() when the status arrived
    status: JSON  # the TaskStatus JSON exactly as received

    @property
    def state(self) -> str:
        return self.status["state"]

    @property
    def healthy(self) -> bool | None:
        return self.status.get("healthy")

    @property
    def message(self) -> str | None:
        return self.status.get("message")

    @property
    def task_id(self) -> str:
        return self.status["task_id"]["value"]

    @property
    def uuid(self) -> str:
        return self.status["uuid"]


class CallRecord(NamedTuple):
    """One request to the executor API, accepted or not."""

    time: float  # time.monotonic() when it arrived
    type: str | None  # the call's "type", or None if the body was not a JSON object
    headers: Message  # the request headers; lookups are case-insensitive


class ExecutorProcess:
    """A launched executor: `/bin/sh -c <command>` in its own session, run in the sandbox."""

    def __init__(
        self, proc: subprocess.Popen[bytes], sandbox: str, task_id: str, executor_id: str
    ) -> None:
        self.proc = proc
        self.sandbox = sandbox
        self.task_id = task_id
        self.executor_id = executor_id

    @property
    def pid(self) -> int:
        """The pid of the shell, which `exec`s the executor; also its process group id."""
        return self.proc.pid

    def wait_exit(self, timeout: float) -> int:
        """Return the exit status; on timeout kill the process group and raise AssertionError."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(
                f"executor {self.pid} still running after {timeout}s; stderr ends with:\n"
                + self.stderr()[-2000:]
            ) from None

    def stdout(self) -> str:
        """Everything the executor wrote to `<sandbox>/stdout` so far."""
        return self._read("stdout")

    def stderr(self) -> str:
        """Everything the executor wrote to `<sandbox>/stderr` so far."""
        return self._read("stderr")

    def kill_group(self) -> None:
        """SIGKILL every process in the executor's process group and reap the executor."""
        with contextlib.suppress(ProcessLookupError):  # the group is already empty
            os.killpg(self.pid, signal.SIGKILL)
        # A process stuck in the kernel may outlive SIGKILL; nothing more a test can do then.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def _read(self, name: str) -> str:
        with open(os.path.join(self.sandbox, name), encoding="utf-8", errors="replace") as f:
            return f.read()


class _Rejected(Exception):
    """An error answer to an executor call, with the status and text a real agent would use."""

    def __init__(self, status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text
        self.headers = headers


class _Stream:
    """One SUBSCRIBE response. Any thread queues events; the handler thread writes them."""

    def __init__(self, executor_id: str) -> None:
        self.executor_id = executor_id
        self.opened = time.monotonic()
        self._queue: queue.Queue[JSON | None] = queue.Queue()
        self._closed = threading.Event()

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def put(self, event: JSON) -> None:
        self._queue.put(event)

    def close(self) -> None:
        self._closed.set()
        self._queue.put(None)  # wake the writer

    def serve(self, wfile: Any, sock: socket.socket) -> None:
        """Write queued events as chunked RecordIO until closed or the client goes away."""
        batch = 0
        while self.is_open:
            try:
                events = [self._queue.get(timeout=0.1)]
            except queue.Empty:
                if _peer_closed(sock):
                    break
                continue
            # Events queued together (SUBSCRIBED + LAUNCH) share a batch, hence a chunk.
            while not self._queue.empty():
                events.append(self._queue.get_nowait())
            data = b"".join(_recordio(event) for event in events if event is not None)
            if not data or not self.is_open:
                continue
            try:
                for piece in _chunk_plan(data, batch):
                    wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            except OSError:
                break
            batch += 1
        self._closed.set()


def _recordio(event: JSON) -> bytes:
    payload = json.dumps(event, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(payload), payload)


def _chunk_plan(data: bytes, batch: int) -> list[bytes]:
    """Cut one batch of RecordIO bytes into HTTP chunks that ignore record boundaries.

    Even batches go out as one chunk, so the first batch (SUBSCRIBED + LAUNCH) puts two records
    in one chunk. Odd batches are cut inside the first length prefix and mid-batch, so a
    client has to reassemble both the prefix and the payload across chunks.
    """
    if batch % 2 == 0 or len(data) < 4:
        return [data]
    middle = len(data) // 2
    return [data[:1], data[1:middle], data[middle:]]


def _peer_closed(sock: socket.socket) -> bool:
    """True once the client closed its end: readable, yet nothing to read."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and not sock.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError):
        return True


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True  # re-bind the same port after refuse_subscriptions()
    daemon_threads = True  # an open stream must never keep the test process alive
    block_on_close = False  # server_close() must not wait for open streams

    def __init__(self, address: tuple[str, int], agent: MesosAgentDouble) -> None:
        self.agent = agent
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streams and keep-alive call connections need 1.1
    disable_nagle_algorithm = True  # each chunk leaves as written, so the splits reach clients
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.agent._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.agent._track(self.connection, add=False)
        with contextlib.suppress(OSError):  # drop_connection() may have shut the socket down
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output readable

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in STATE_PATHS:
            self._reply(200, json.dumps(self.server.agent.state_json()), "application/json")
        else:
            self.do_POST()

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] in EXECUTOR_API_PATHS:
            self._executor_call()
        else:
            self._reply(404, "Not Found")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _executor_call(self) -> None:
        agent = self.server.agent
        arrived = time.monotonic()  # updates are timed by arrival, like Consul's requests
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            call = agent._admit(self.command, self.headers, body)
        except _Rejected as rejected:
            self._reply(rejected.status, rejected.text, headers=rejected.headers)
            return
        if call["type"] == "SUBSCRIBE":
            self._stream(agent._subscribe(call))
            return
        # A real agent answers 202 when it queues the call and processes it afterwards. Doing
        # the same means a test that saw the update knows the 202 is already on its way.
        self._reply(202, "")
        agent._accept(call, arrived)

    def _stream(self, stream: _Stream) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True  # nothing else can follow on this connection
        try:
            stream.serve(self.wfile, self.connection)
        finally:
            self.server.agent._stream_ended(stream)

    def _reply(
        self,
        status: int,
        text: str,
        content_type: str = "text/plain; charset=utf-8",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        data = text.encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class _Executor:
    executor_id: str
    task: JSON  # the TaskInfo that LAUNCH carries
    sandbox: str
    container_id: str
    process: ExecutorProcess | None = None
    stream: _Stream | None = None
    launched: bool = False


class MesosAgentDouble:
    """An in-process Mesos agent for one framework, serving the executor API on `endpoint`.

    Public state (append-only lists, safe to read from tests):

    * ``updates``: every distinct TaskStatus (by uuid) in arrival order, from UPDATE calls or
      first seen in a re-SUBSCRIBE's ``unacknowledged_updates``; re-sent duplicates are
      answered and acknowledged but not recorded twice, as Mesos ignores them.
    * ``subscriptions``: every accepted SUBSCRIBE call body.
    * ``requests``: every executor API request as a CallRecord(time, type, headers).
    """

    def __init__(
        self,
        *,
        auth_token: str | None = None,
        checkpoint: bool = True,
        framework_capabilities: Sequence[str] = ("TASK_KILLING_STATE",),
        shutdown_grace_period: str = "5secs",
        recovery_timeout: str = "15mins",
        subscription_backoff_max: str = "2secs",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.auth_token = auth_token
        self.checkpoint = checkpoint
        self.framework_capabilities = list(framework_capabilities)
        self.shutdown_grace_period = shutdown_grace_period
        self.recovery_timeout = recovery_timeout
        self.subscription_backoff_max = subscription_backoff_max
        self.host = host
        self.port = port
        self.endpoint = f"{host}:{port}"
        # Fresh IDs per double, shaped like real ones, so nothing can rely on constants.
        self.framework_id = f"{uuid.uuid4()}-0000"
        self.agent_id = f"{uuid.uuid4()}-S0"

        self.updates: list[StatusRecord] = []
        self.subscriptions: list[JSON] = []
        self.requests: list[CallRecord] = []

        # One re-entrant lock guards all state; notify_all() wakes wait_for() on any change.
        self._cond = threading.Condition()
        self._executors: dict[str, _Executor] = {}
        self._seen_uuids: set[str] = set()
        self._acked: list[str] = []
        self._auto_ack = True
        self._recovering_until = 0.0
        self._recovering_status = 503
        self._connections: set[socket.socket] = set()
        # The listener has its own lock: it is closed and re-opened from timer threads.
        self._listener_lock = threading.Lock()
        self._server: _Server | None = None
        self._server_thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> MesosAgentDouble:
        """Bind the listening socket (fixing `endpoint` and `port`) and start serving."""
        with self._listener_lock:
            self._listen()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then SIGKILL the process group of each
        executor this double launched, so that no test leaks processes."""
        with self._listener_lock:
            self._stopped = True
            for timer in self._timers:
                timer.cancel()
            self._close_listener()
        self.drop_connection()
        with self._cond:
            processes = [e.process for e in self._executors.values() if e.process]
        for process in processes:
            process.kill_group()

    def __enter__(self) -> MesosAgentDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _listen(self) -> None:
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self.endpoint = f"{self.host}:{self.port}"
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() returns within one poll
            name=f"mesos-agent-double:{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._server_thread = server, thread

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._server_thread is not None
            self._server_thread.join()
            self._server = self._server_thread = None

    def _reopen_listener(self) -> None:
        with self._listener_lock:
            deadline = time.monotonic() + 5.0
            while not self._stopped and self._server is None:
                try:
                    self._listen()
                except OSError:
                    # The old socket may linger a moment even with SO_REUSEADDR.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    # ----------------------------------------------------------------- launching

    def launch_executor(
        self,
        executor_path: str,
        task_info: JSON,
        *,
        sandbox: str,
        extra_env: dict[str, str] | None = None,
        app_cmd: str | None = None,
    ) -> ExecutorProcess:
        """Start an executor for `task_info` the way an agent does for Marathon.

        The command is `chmod ug+rx '<executor_path>' && exec '<executor_path>' <app_cmd>` when
        `app_cmd` is given, else the TaskInfo's own `executor.command.value`. It runs under
        `/bin/sh -c` in a new session with cwd `sandbox`, output to `<sandbox>/stdout` and
        `<sandbox>/stderr`, and the environment of reference section 1, then the command's
        environment variables, then `extra_env`. When the executor first subscribes it gets
        SUBSCRIBED and then LAUNCH with a copy of `task_info` completed with the double's IDs.
        """
        task = copy.deepcopy(task_info)
        task_id = task["task_id"]["value"]
        executor_id = f"marathon-{task_id}"
        task["agent_id"] = {"value": self.agent_id}
        executor_info = task.setdefault("executor", {})
        executor_info["executor_id"] = {"value": executor_id}
        executor_info["framework_id"] = {"value": self.framework_id}
        command = executor_info.setdefault("command", {"shell": True})
        if app_cmd is not None:
            command["value"] = marathon_executor_command(executor_path, app_cmd)
        if not command.get("value"):
            raise ValueError("task_info has no executor.command.value and no app_cmd was given")

        sandbox = os.path.abspath(sandbox)
        os.makedirs(sandbox, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", os.defpath), **self._agent_env(executor_id, sandbox)}
        for variable in command.get("environment", {}).get("variables", []):
            if variable.get("type", "VALUE") == "VALUE":
                env[variable["name"]] = variable["value"]
        env.update(extra_env or {})

        with self._cond:
            if executor_id in self._executors:
                raise ValueError(f"executor {executor_id} was already launched")
            record = _Executor(executor_id, task, sandbox, container_id=str(uuid.uuid4()))
            self._executors[executor_id] = record  # before the process can subscribe
        with (
            open(os.path.join(sandbox, "stdout"), "wb") as out,
            open(os.path.join(sandbox, "stderr"), "wb") as err,
        ):
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command["value"]],
                cwd=sandbox,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # like a container: its own group, away from pytest's
            )
        record.process = ExecutorProcess(proc, sandbox, task_id, executor_id)
        return record.process

    def _agent_env(self, executor_id: str, sandbox: str) -> dict[str, str]:
        env = {
            "MESOS_AGENT_ENDPOINT": self.endpoint,
            "MESOS_FRAMEWORK_ID": self.framework_id,
            "MESOS_EXECUTOR_ID": executor_id,
            "MESOS_DIRECTORY": sandbox,
            "MESOS_SANDBOX": sandbox,
            "MESOS_CHECKPOINT": "1" if self.checkpoint else "0",
            "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": self.shutdown_grace_period,
            "MESOS_SLAVE_ID": self.agent_id,
            "MESOS_SLAVE_PID": f"slave(1)@{self.endpoint}",
            "MESOS_HTTP_COMMAND_EXECUTOR": "0",
            "LIBPROCESS_IP": "127.0.0.1",
            "LIBPROCESS_PORT": "0",
        }
        if self.checkpoint:
            env["MESOS_RECOVERY_TIMEOUT"] = self.recovery_timeout
            env["MESOS_SUBSCRIPTION_BACKOFF_MAX"] = self.subscription_backoff_max
        if self.auth_token is not None:
            env["MESOS_EXECUTOR_AUTHENTICATION_TOKEN"] = self.auth_token
        return env

    # ----------------------------------------------------------------- events to the executor

    def send_event(self, event: JSON, *, executor_id: str | None = None) -> None:
        """Push a raw event on an executor's open stream (default: the latest subscribed one).

        Raises RuntimeError if that executor has no open subscription stream.
        """
        with self._cond:
            self._open_stream(executor_id).put(event)

    def kill(self, task_id: str, grace_period: float | None = None) -> None:
        """Send KILL for `task_id`, with `kill_policy.grace_period` when `grace_period` (seconds)
        is given."""
        kill: JSON = {"task_id": {"value": task_id}}
        if grace_period is not None:
            kill["kill_policy"] = {"grace_period": {"nanoseconds": round(grace_period * 1e9)}}
        with self._cond:
            owner = next((e for e in self._executors.values() if _task_id(e.task) == task_id), None)
            if owner is None:
                raise ValueError(f"no task {task_id} was launched")
            self._open_stream(owner.executor_id).put({"type": "KILL", "kill": kill})

    def shutdown(self, executor_id: str | None = None) -> None:
        """Send SHUTDOWN to `executor_id`, or to every executor with an open stream."""
        with self._cond:
            if executor_id is not None:
                self._open_stream(executor_id).put({"type": "SHUTDOWN"})
                return
            streams = [e.stream for e in self._executors.values() if e.stream and e.stream.is_open]
            if not streams:
                raise RuntimeError("no executor has an open subscription stream")
            for stream in streams:
                stream.put({"type": "SHUTDOWN"})

    def set_auto_ack(self, on: bool) -> None:
        """Whether each accepted update is answered by ACKNOWLEDGED on the stream (default on).

        Turning it back on does not acknowledge earlier updates; the executor must re-send them
        with its next SUBSCRIBE, which are then acknowledged.
        """
        with self._cond:
            self._auto_ack = on

    def acknowledged(self) -> list[str]:
        """The uuids acknowledged so far, each once, in order."""
        with self._cond:
            return list(self._acked)

    def drop_connection(self) -> None:
        """Close every connection abruptly, as an agent exit does: subscription streams end
        without a final chunk, and idle keep-alive call connections are closed too."""
        with self._cond:
            for executor in self._executors.values():
                if executor.stream is not None:
                    executor.stream.close()
            connections = list(self._connections)
            self._cond.notify_all()
        for sock in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def refuse_subscriptions(self, seconds: float, status: int | str = "refuse") -> None:
        """For the next `seconds`, act like an agent that is recovering after a restart.

        With an int status, every executor call gets that status (a real agent uses 503) and
        the body `Agent has not finished recovery`. With "refuse", the listening socket is
        closed, so connecting fails with ECONNREFUSED, and the same port is bound again
        afterwards. Open connections are left alone. Returns at once.

        To model an agent restart, call this first and drop_connection() second (or use
        restart()): in the other order an executor may re-subscribe before the window opens.
        """
        if status == "refuse":
            with self._listener_lock:
                self._close_listener()
                timer = threading.Timer(seconds, self._reopen_listener)
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
        elif isinstance(status, int):
            with self._cond:
                self._recovering_status = status
                self._recovering_until = time.monotonic() + seconds
        else:
            raise ValueError(f"status must be an HTTP status code or 'refuse', not {status!r}")

    def restart(self, down_for: float, status: int | str = "refuse") -> None:
        """Model an agent restart: refuse_subscriptions(down_for, status), then
        drop_connection(). Returns at once."""
        self.refuse_subscriptions(down_for, status)
        self.drop_connection()

    def _open_stream(self, executor_id: str | None) -> _Stream:
        if executor_id is None:
            executors = list(self._executors.values())
        else:
            executors = [self._executors[executor_id]] if executor_id in self._executors else []
        streams = [e.stream for e in executors if e.stream is not None and e.stream.is_open]
        if not streams:
            raise RuntimeError(f"no open subscription stream (executor {executor_id or 'any'})")
        return max(streams, key=lambda stream: stream.opened)

    # ----------------------------------------------------------------- observing

    def is_subscribed(self, executor_id: str | None = None) -> bool:
        """Whether `executor_id` (default: any executor) has an open subscription stream."""
        with self._cond:
            try:
                self._open_stream(executor_id)
            except RuntimeError:
                return False
            return True

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> None:
        """Wait until `predicate()` is true; raise AssertionError after `timeout` seconds.

        The predicate runs outside the double's lock, so it may do I/O. It is re-checked on
        every change to the double and at least every 50 ms.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout}s; {self._summary()}")
            with self._cond:
                self._cond.wait(min(remaining, 0.05))

    def wait_for_update(
        self, state: str, *, healthy: bool | None = None, timeout: float = 10.0, after: int = 0
    ) -> StatusRecord:
        """Return the first update in `updates[after:]` with this state (and `healthy` value,
        when given), waiting up to `timeout` seconds; AssertionError if none arrives."""

        def find() -> StatusRecord | None:
            return next(
                (
                    record
                    for record in self.updates[after:]
                    if record.state == state and (healthy is None or record.healthy is healthy)
                ),
                None,
            )

        want = state if healthy is None else f"{state} (healthy={healthy})"
        try:
            self.wait_for(lambda: find() is not None, timeout)
        except AssertionError:
            raise AssertionError(f"no {want} within {timeout}s; {self._summary()}") from None
        record = find()
        assert record is not None
        return record

    def state_json(self) -> JSON:
        """The agent's /state for the launched tasks (task state from the latest update)."""
        with self._cond:
            executors = [self._executor_state(e) for e in self._executors.values()]
        return {
            "id": self.agent_id,
            "hostname": self.host,
            "pid": f"slave(1)@{self.endpoint}",
            "frameworks": [
                {
                    "id": self.framework_id,
                    "name": "marathon",
                    "checkpoint": self.checkpoint,
                    "executors": executors,
                }
            ],
        }

    def _executor_state(self, executor: _Executor) -> JSON:
        task_info = executor.task
        statuses = [r.status for r in self.updates if r.task_id == _task_id(task_info)]
        task: JSON = {
            "id": _task_id(task_info),
            "name": task_info.get("name", ""),
            "framework_id": self.framework_id,
            "executor_id": executor.executor_id,
            "slave_id": self.agent_id,
            "state": statuses[-1]["state"] if statuses else "TASK_STAGING",
            "resources": _resources_summary(task_info.get("resources", [])),
            "statuses": [
                {k: s[k] for k in ("state", "timestamp", "healthy") if k in s} for s in statuses
            ],
        }
        # Like a real agent, labels and discovery appear only when the TaskInfo has them.
        if "labels" in task_info:
            task["labels"] = task_info["labels"].get("labels", [])
        if "discovery" in task_info:
            task["discovery"] = task_info["discovery"]
        return {
            "id": executor.executor_id,
            "name": "",
            "framework_id": self.framework_id,
            "directory": executor.sandbox,
            "container": executor.container_id,
            "tasks": [task],
        }

    def _summary(self) -> str:
        states = [
            r.state + ("" if r.healthy is None else f"(healthy={r.healthy})") for r in self.updates
        ]
        calls = [c.type for c in self.requests]
        return f"updates so far: {states}; calls so far: {calls}"

    # ----------------------------------------------------------------- serving calls

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def _admit(self, method: str, headers: Message, body: bytes) -> JSON:
        """Check a call in the real agent's order; return it, or raise _Rejected."""
        try:
            call = json.loads(body)
        except ValueError:
            call = None
        with self._cond:
            call_type = call.get("type") if isinstance(call, dict) else None
            self.requests.append(CallRecord(time.monotonic(), call_type, headers))
            self._cond.notify_all()

        # libprocess authenticates before the request reaches the executor API handler.
        if self.auth_token is not None and headers.get("Authorization") != (
            f"Bearer {self.auth_token}"
        ):
            raise _Rejected(401, "", [("WWW-Authenticate", 'Bearer realm="mesos-agent-executor"')])
        if method != "POST":
            raise _Rejected(
                405, f"Expecting one of {{ 'POST' }}, but received '{method}'", [("Allow", "POST")]
            )
        content_type = headers.get("Content-Type")
        if content_type is None:
            raise _Rejected(400, "Expecting 'Content-Type' to be present")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type == "application/x-protobuf":
            raise _Rejected(415, "This agent double only speaks application/json")
        if media_type != "application/json":
            raise _Rejected(
                415, "Expecting 'Content-Type' of application/json or application/x-protobuf"
            )
        if call is None:
            raise _Rejected(400, "Failed to parse body into JSON: invalid JSON")
        if not isinstance(call, dict):
            raise _Rejected(400, "Failed to convert JSON into Call protobuf: not a JSON object")
        problem = _validate(call)
        if problem:
            raise _Rejected(400, problem)
        if call["type"] == "SUBSCRIBE" and not _accepts_json(headers.get("Accept")):
            raise _Rejected(406, "Expecting 'Accept' to allow 'application/json'")

        with self._cond:
            if time.monotonic() < self._recovering_until:
                raise _Rejected(self._recovering_status, RECOVERING)
            if call["framework_id"]["value"] != self.framework_id:
                raise _Rejected(400, "Framework cannot be found")
            executor = self._executors.get(call["executor_id"]["value"])
            if executor is None:
                raise _Rejected(400, "Executor cannot be found")
            subscribed = executor.stream is not None and executor.stream.is_open
            if call["type"] != "SUBSCRIBE" and not subscribed:
                raise _Rejected(403, "Executor is not subscribed")
        return call

    def _subscribe(self, call: JSON) -> _Stream:
        """Open a new stream for an admitted SUBSCRIBE and queue its first events."""
        with self._cond:
            executor = self._executors[call["executor_id"]["value"]]
            if executor.stream is not None:
                executor.stream.close()  # a real agent drops the old connection too
            stream = executor.stream = _Stream(executor.executor_id)
            self.subscriptions.append(call)
            stream.put(self._subscribed_event(executor))
            if not executor.launched:
                executor.launched = True
                stream.put({"type": "LAUNCH", "launch": {"task": executor.task}})
            # The agent processes re-sent updates like new UPDATE calls (ignoring duplicates),
            # so each is acknowledged again; that is how the executor learns it can drop them.
            for update in call["subscribe"].get("unacknowledged_updates") or []:
                status = update.get("status") or {}
                if "uuid" in status and "task_id" in status:
                    self._record_status(status)
                    if self._auto_ack:
                        stream.put(self._ack_event(status))
            self._cond.notify_all()
        return stream

    def _subscribed_event(self, executor: _Executor) -> JSON:
        return {
            "type": "SUBSCRIBED",
            "subscribed": {
                "executor_info": executor.task["executor"],
                "framework_info": {
                    "id": {"value": self.framework_id},
                    "user": "root",
                    "name": "marathon",
                    "checkpoint": self.checkpoint,
                    "capabilities": [{"type": c} for c in self.framework_capabilities],
                },
                "agent_info": {
                    "id": {"value": self.agent_id},
                    "hostname": self.host,
                    "port": self.port,
                },
                "container_id": {"value": executor.container_id},
            },
        }

    def _accept(self, call: JSON, arrived: float) -> None:
        """Process an admitted, already answered UPDATE, MESSAGE or HEARTBEAT."""
        if call["type"] != "UPDATE":
            return  # MESSAGE and HEARTBEAT need nothing beyond their 202
        status = call["update"]["status"]
        with self._cond:
            self._record_status(status, arrived)
            stream = self._executors[call["executor_id"]["value"]].stream
            if self._auto_ack and stream is not None and stream.is_open:
                stream.put(self._ack_event(status))

    def _record_status(self, status: JSON, arrived: float | None = None) -> None:
        if status["uuid"] in self._seen_uuids:
            return
        self._seen_uuids.add(status["uuid"])
        self.updates.append(StatusRecord(arrived or time.monotonic(), status))
        self._cond.notify_all()

    def _ack_event(self, status: JSON) -> JSON:
        if status["uuid"] not in self._acked:
            self._acked.append(status["uuid"])
        self._cond.notify_all()
        return {
            "type": "ACKNOWLEDGED",
            "acknowledged": {"task_id": status["task_id"], "uuid": status["uuid"]},
        }

    def _stream_ended(self, stream: _Stream) -> None:
        with self._cond:
            executor = self._executors.get(stream.executor_id)
            if executor is not None and executor.stream is stream:
                executor.stream = None
            self._cond.notify_all()


def _validate(call: JSON) -> str | None:
    """Why a real agent would reject this Executor::Call with 400, or None if it is valid."""
    call_type = call.get("type")
    if call_type is None:
        return "Failed to validate Executor::Call: Expecting 'type' to be present"
    if call_type not in _CALL_TYPES:
        return f"Failed to convert JSON into Call protobuf: unknown Call.type '{call_type}'"
    for key in ("executor_id", "framework_id"):
        if not isinstance(call.get(key), dict) or not isinstance(call[key].get("value"), str):
            return f"Failed to validate Executor::Call: Expecting '{key}' to be present"
    payload_key = call_type.lower()
    if call_type != "HEARTBEAT" and not isinstance(call.get(payload_key), dict):
        return f"Failed to validate Executor::Call: Expecting '{payload_key}' to be present"
    if call_type == "UPDATE":
        problem = _validate_status(call["update"].get("status"), call)
        if problem:
            return f"Failed to validate Executor::Call: {problem}"
    return None


def _validate_status(status: object, call: JSON) -> str | None:
    if not isinstance(status, dict) or "task_id" not in status or "state" not in status:
        return "Not initialized: update.status.task_id, update.status.state"
    if status["state"] not in _TASK_STATES:
        return f"Unknown TaskState '{status['state']}'"
    if "uuid" not in status:
        return "Expecting 'uuid' to be present"
    try:
        raw_uuid = base64.b64decode(status["uuid"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raw_uuid = b""
    if len(raw_uuid) != 16:
        return f"Invalid 'uuid': not the base64 of 16 bytes: {status['uuid']!r}"
    executor_id = call["executor_id"]["value"]
    framework_id = call["framework_id"]["value"]
    if "executor_id" in status and status["executor_id"] != call["executor_id"]:
        return f"ExecutorID in Call: {executor_id} does not match ExecutorID in TaskStatus"
    # A missing source is proto's first enum value, SOURCE_MASTER: rejected the same way.
    if status.get("source") != "SOURCE_EXECUTOR":
        return (
            f"Received Call from executor '{executor_id}' of framework '{framework_id}' "
            "with invalid source, expecting 'SOURCE_EXECUTOR'"
        )
    if status["state"] == "TASK_STAGING":
        return (
            f"Received TASK_STAGING from executor '{executor_id}' of framework "
            f"'{framework_id}' which is not allowed"
        )
    return None


def _accepts_json(accept: str | None) -> bool:
    if accept is None:
        return True  # no Accept header: the agent picks JSON
    media_types = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return bool(media_types & {"application/json", "application/*", "*/*"})


def _task_id(task_info: JSON) -> str:
    return task_info["task_id"]["value"]


def _resources_summary(resources: list[JSON]) -> JSON:
    """Resources as an agent's /state shows them: scalars as numbers, ranges as a string."""
    summary: JSON = {"cpus": 0.0, "disk": 0.0, "gpus": 0.0, "mem": 0.0}
    for resource in resources:
        if "scalar" in resource:
            summary[resource["name"]] = resource["scalar"]["value"]
        elif "ranges" in resource:
            ranges = resource["ranges"].get("range", [])
            summary[resource["name"]] = (
                "[" + ", ".join(f"{r['begin']}-{r['end']}" for r in ranges) + "]"
            )
    return summary


# --------------------------------------------------------------------------- Marathon TaskInfo

_MESOS_HEALTH_CHECKS = {
    "MESOS_HTTP": "HTTP",
    "MESOS_HTTPS": "HTTP",
    "MESOS_TCP": "TCP",
    "COMMAND": "COMMAND",
}
# Marathon's defaults for health check timings (seconds) and failures.
_HEALTH_CHECK_DEFAULTS = (
    ("delay_seconds", "delaySeconds", 15.0),
    ("interval_seconds", "intervalSeconds", 60.0),
    ("timeout_seconds", "timeoutSeconds", 20.0),
    ("consecutive_failures", "maxConsecutiveFailures", 3),
    ("grace_period_seconds", "gracePeriodSeconds", 300.0),
)
# Marathon skips labels whose env var would exceed 512 characters.
_MAX_ENV_LENGTH = 512
_LABEL_PREFIX = "MARATHON_APP_LABEL_"


def marathon_executor_command(executor_path: str, app_cmd: str) -> str:
    """`executor.command.value` as Marathon builds it for a custom executor (naive quoting)."""
    return f"chmod ug+rx '{executor_path}' && exec '{executor_path}' {app_cmd}"


def marathon_task_info(
    app: JSON, *, executor_path: str, host: str = "127.0.0.1", ports: list[int] | None = None
) -> JSON:
    """The TaskInfo that Marathon 1.5-1.7 sends in LAUNCH for `app` (a Marathon app JSON).

    `ports` are the host ports assigned to the app's port definitions, in order (default:
    free ephemeral ports on 127.0.0.1). `host` is what HOST is set to. Agent and framework
    IDs are placeholders that launch_executor() replaces.
    """
    segments = app["id"].strip("/").split("/")
    name = ".".join(reversed(segments))
    task_id = f"{'_'.join(segments)}.{uuid.uuid1()}"
    port_definitions = _port_definitions(app)
    if ports is None:
        ports = _free_ports(len(port_definitions))
    if len(ports) != len(port_definitions):
        raise ValueError(f"{len(port_definitions)} port definitions but {len(ports)} ports")
    labels = app.get("labels") or {}
    cmd = app.get("cmd") or " ".join(app.get("args") or [])

    env = _marathon_env(app, task_id, port_definitions, ports, host)
    task: JSON = {
        "name": name,
        "task_id": {"value": task_id},
        "agent_id": {"value": PLACEHOLDER_AGENT_ID},
        "resources": _marathon_resources(app, ports),
        "executor": {
            "executor_id": {"value": f"marathon-{task_id}"},
            "command": {
                "environment": {
                    "variables": [
                        {"name": key, "value": value, "type": "VALUE"} for key, value in env.items()
                    ]
                },
                "value": marathon_executor_command(executor_path, cmd),
                "shell": True,
            },
            "framework_id": {"value": PLACEHOLDER_FRAMEWORK_ID},
        },
    }
    health_check = _marathon_health_check(app, ports)
    if health_check is not None:
        task["health_check"] = health_check
    if labels:
        task["labels"] = {"labels": _label_list(labels)}
    task["discovery"] = {"visibility": "FRAMEWORK", "name": name}
    discovery_ports = [
        _discovery_port(definition, port, protocol)
        for definition, port in zip(port_definitions, ports)
        for protocol in definition.get("protocol", "tcp").split(",")
    ]
    if discovery_ports:
        task["discovery"]["ports"] = {"ports": discovery_ports}
    grace = app.get("taskKillGracePeriodSeconds")
    if grace is not None:
        task["kill_policy"] = {"grace_period": {"nanoseconds": round(grace * 1e9)}}
    return task


def _port_definitions(app: JSON) -> list[JSON]:
    if "portDefinitions" in app:
        return list(app["portDefinitions"] or [])
    if "ports" in app:  # the legacy form: a list of port numbers
        return [{"port": port, "protocol": "tcp"} for port in app["ports"] or []]
    return [{"port": 0, "protocol": "tcp"}]  # Marathon gives an app one random port by default


def _free_ports(count: int) -> list[int]:
    # Hold all sockets until every port is known, so the ports are distinct.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _marathon_env(
    app: JSON, task_id: str, port_definitions: list[JSON], ports: list[int], host: str
) -> dict[str, str]:
    version = app.get("version") or (
        datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    env = {
        "MESOS_TASK_ID": task_id,
        "MARATHON_APP_ID": "/" + app["id"].strip("/"),
        "MARATHON_APP_VERSION": version,
        # Scala's Double.toString, which Python's float repr matches for these values.
        "MARATHON_APP_RESOURCE_CPUS": repr(float(app.get("cpus", 1.0))),
        "MARATHON_APP_RESOURCE_MEM": repr(float(app.get("mem", 128.0))),
        "MARATHON_APP_RESOURCE_DISK": repr(float(app.get("disk", 0.0))),
        "MARATHON_APP_RESOURCE_GPUS": str(int(app.get("gpus", 0))),
    }
    labels = {
        re.sub(r"[^A-Za-z0-9_]+", "_", key).upper(): value
        for key, value in (app.get("labels") or {}).items()
        if len(key) < _MAX_ENV_LENGTH - len(_LABEL_PREFIX) and len(value) < _MAX_ENV_LENGTH
    }
    env["MARATHON_APP_LABELS"] = " ".join(labels)
    env.update({_LABEL_PREFIX + key: value for key, value in labels.items()})

    for index, port in enumerate(ports):
        env[f"PORT{index}"] = str(port)
    for definition, port in zip(port_definitions, ports):
        env[f"PORT_{definition.get('port') or port}"] = str(port)  # random ports: their own number
    for definition, port in zip(port_definitions, ports):
        if definition.get("name"):
            env[f"PORT_{definition['name'].upper()}"] = str(port)  # upper-cased, not escaped
    if ports:
        env["PORT"] = str(ports[0])
        env["PORTS"] = ",".join(str(port) for port in ports)
    env["HOST"] = host
    # The app's own env comes last and wins; secrets ({"secret": ...}) are not plain values.
    env.update({k: v for k, v in (app.get("env") or {}).items() if isinstance(v, str)})
    return env


def _marathon_resources(app: JSON, ports: list[int]) -> list[JSON]:
    def scalar(name: str, value: float) -> JSON:
        return {
            "name": name,
            "type": "SCALAR",
            "scalar": {"value": float(value)},
            "allocation_info": {"role": "*"},
        }

    resources = [scalar("cpus", app.get("cpus", 1.0)), scalar("mem", app.get("mem", 128.0))]
    for name in ("disk", "gpus"):  # absent when zero
        if app.get(name):
            resources.append(scalar(name, app[name]))
    ranges: list[JSON] = []
    for port in ports:  # adjacent ports merge into one range; the order is kept
        if ranges and ranges[-1]["end"] + 1 == port:
            ranges[-1]["end"] = port
        else:
            ranges.append({"begin": port, "end": port})
    if ranges:
        resources.append(
            {
                "name": "ports",
                "type": "RANGES",
                "ranges": {"range": ranges},
                "allocation_info": {"role": "*"},
            }
        )
    return resources


def _marathon_health_check(app: JSON, ports: list[int]) -> JSON | None:
    # Only the first Mesos-run check is sent; Marathon runs HTTP/HTTPS/TCP checks itself.
    check = next(
        (
            hc
            for hc in app.get("healthChecks") or []
            if hc.get("protocol", "HTTP") in _MESOS_HEALTH_CHECKS
        ),
        None,
    )
    if check is None:
        return None
    protocol = check["protocol"]
    port = check.get("port") or (ports[check.get("portIndex", 0)] if ports else None)
    result: JSON = {}
    if protocol in ("MESOS_HTTP", "MESOS_HTTPS"):
        http: JSON = {"port": port}
        if check.get("path"):
            http["path"] = check["path"]
        http["scheme"] = "https" if protocol == "MESOS_HTTPS" else "http"
        http["protocol"] = check.get("ipProtocol", "IPv4")
        result["http"] = http
    elif protocol == "MESOS_TCP":
        result["tcp"] = {"port": port}
    else:
        result["command"] = {"value": check["command"]["value"], "shell": True}
    for mesos_key, marathon_key, default in _HEALTH_CHECK_DEFAULTS:
        # Same type as the default: seconds are doubles, consecutive_failures an integer.
        result[mesos_key] = type(default)(check.get(marathon_key, default))
    result["type"] = _MESOS_HEALTH_CHECKS[protocol]
    return result


def _label_list(labels: dict[str, str]) -> list[JSON]:
    return [{"key": key, "value": value} for key, value in labels.items()]


def _discovery_port(definition: JSON, port: int, protocol: str) -> JSON:
    entry: JSON = {"number": port}
    if definition.get("name"):
        entry["name"] = definition["name"]
    entry["protocol"] = protocol
    if definition.get("labels"):
        entry["labels"] = {"labels": _label_list(definition["labels"])}
    return entry
