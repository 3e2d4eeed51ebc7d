"""``pymesos.MesosExecutorDriver``, with the behaviour a Mesos agent expects of an executor.

pymesos 0.3.15 gets several things wrong for a production executor; each is fixed
here by overriding one method of the driver (see ``mesos-executor.md``):

* **Auth** — no ``Authorization`` header: :meth:`gen_request` (SUBSCRIBE) and
  :meth:`_send` (every other call) send ``Bearer $MESOS_EXECUTOR_AUTHENTICATION_TOKEN``.
* **Environment** — the constructor reads ``os.environ`` itself (``MESOS_CHECKPOINT`` as
  a bool, so ``"0"`` is on; the grace period in Mesos units only, 0 when unset): the
  driver is built from the checked :class:`~executor.config.AgentEnv` instead.
* **Reconnecting** — 2 s…15 s back-off, no recovery timeout, no back-off at all after
  a 503: :meth:`on_close` waits at most ``MESOS_SUBSCRIPTION_BACKOFF_MAX`` between
  attempts and gives up after ``MESOS_RECOVERY_TIMEOUT`` (then the executor's graceful
  shutdown runs); the task keeps running meanwhile when checkpointing is on.
* **KILL's kill_policy** is dropped: :meth:`on_kill` keeps it for :meth:`take_kill_policy`.
* **Unacknowledged updates** are forgotten: :meth:`send_update` gives each status its own
  uuid and files it in ``updates`` *before* sending, so pymesos's SUBSCRIBE carries it in
  ``unacknowledged_updates`` until ACKNOWLEDGED; updates that could not be sent are sent
  again once subscribed. :meth:`wait_acknowledged` waits for an ACK.
* **Self-kill** — on SHUTDOWN pymesos SIGKILLs its own process group after the grace
  period, leaving the task (in its own session) alive: :meth:`arm_self_kill` SIGKILLs
  every task process group first. The SUBSCRIBE stream also stays open after SHUTDOWN
  (pymesos aborted it), so TASK_KILLED can still be acknowledged.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import signal
import threading
import time
import uuid

from pymesos.executor import MesosExecutorDriver
from pymesos.process import Process
from pymesos.utils import DAY, encode_data

from executor.config import AgentEnv
from executor.task import GROUPS

log = logging.getLogger(__name__)

API_PATH = "/api/v1/executor"
#: how long a call to the agent may take (pymesos holds its lock that long)
HTTP_TIMEOUT = 5.0
#: first re-subscribe back-off; doubles up to MESOS_SUBSCRIPTION_BACKOFF_MAX
FIRST_BACKOFF = 0.1


class AgentUnavailable(RuntimeError):
    """The call did not get through (not subscribed, connection failed, agent recovering)."""


class AgentRejected(RuntimeError):
    """The agent answered the call with an error status; sending it again will not help."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"the agent answered {status}: {text}".rstrip(": "))
        self.status = status


def reconnect_delay(attempt: int, cap: float, rand: random.Random | None = None) -> float:
    """Jittered exponential back-off for re-subscribe ``attempt`` (0-based), never above ``cap``."""
    rand = rand or random
    ceiling = min(cap, FIRST_BACKOFF * (2**attempt))
    return ceiling * rand.uniform(0.5, 1.0)


class ExecutorDriver(MesosExecutorDriver):
    """The executor side of the v1 executor API, fixed as described in the module docstring.

    ``executor`` gets pymesos's callbacks (on the driver's I/O thread; keep them short).
    """

    def __init__(self, executor, agent: AgentEnv, *, http_timeout: float = HTTP_TIMEOUT) -> None:
        # MesosExecutorDriver.__init__ would read os.environ itself (MESOS_CHECKPOINT as a
        # bool, the grace period in Mesos units only); set its fields (pymesos 0.3.15, pinned)
        # from the already checked ``agent`` instead.
        Process.__init__(self, master=agent.endpoint, timeout=DAY)
        self.agent = agent
        self.executor = executor
        self.framework_id = {"value": agent.framework_id}
        self.executor_id = {"value": agent.executor_id}
        self.checkpoint = agent.checkpoint
        self.local = agent.local
        self.grace_shutdown_period = agent.shutdown_grace_period
        self.framework_info = None
        self.executor_info = None
        self.tasks: dict[str, dict] = {}
        self.updates: dict[uuid.UUID, dict] = {}
        self._conn = None
        self._dict_cls = dict
        self._http_timeout = http_timeout
        #: monotonic time at which the self-kill timer fires, once armed
        self.shutdown_deadline: float | None = None
        #: the I/O thread ended without :meth:`stop` (pymesos then interrupts the main thread)
        self.failed = False
        self.closed = threading.Event()
        self._acks = threading.Condition()
        self._kill_policies: dict[str, dict] = {}
        self._subscribed_with: set[uuid.UUID] = set()
        self._disconnected_since: float | None = None
        self._attempt = 0
        self._stop_requested = False
        self._stopping = threading.Event()
        self._self_kill_lock = threading.Lock()

    # -- sending -----------------------------------------------------------------------------

    def send_update(self, status: dict) -> uuid.UUID:
        """Send a TaskStatus (without ``uuid``); it is re-sent until the agent acknowledges it.

        Never raises for a lost connection: the update is then sent with the next SUBSCRIBE.
        Returns the key to pass to :meth:`wait_acknowledged`.
        """
        key = uuid.uuid4()
        status = {
            **status,
            "uuid": encode_data(key.bytes),
            "timestamp": time.time(),
            "source": "SOURCE_EXECUTOR",
        }
        with self._acks:
            # Filed first: a SUBSCRIBE built from now on carries it, whatever happens below.
            self.updates[key] = {"status": status}
        self._deliver(key, status)
        return key

    def sendStatusUpdate(self, status: dict) -> None:  # pymesos API name
        """pymesos's entry point, routed through the tracked :meth:`send_update`."""
        status.pop("uuid", None)
        self.send_update(status)

    def _deliver(self, key: uuid.UUID, status: dict) -> None:
        describe = _describe_status(status)
        try:
            self._send(self._call("UPDATE", update={"status": status}))
        except AgentRejected as exc:
            with self._acks:
                self.updates.pop(key, None)  # the agent will never accept it
                self._acks.notify_all()
            log.error("%s refused by the agent: %s", describe, exc)
            return
        except AgentUnavailable as exc:
            then = "the driver has stopped" if self.aborted else "it is sent again once subscribed"
            log.warning("%s not delivered (%s); %s", describe, exc, then)
            return
        log.info("%s sent", describe)

    def wait_acknowledged(self, key: uuid.UUID, timeout: float) -> bool:
        """Wait until the agent acknowledged the update ``key``; ``False`` on timeout or when
        the driver has stopped for good."""
        with self._acks:
            self._acks.wait_for(lambda: key not in self.updates or self.closed.is_set(), timeout)
            return key not in self.updates

    def _call(self, call_type: str, **payload) -> dict:
        return {
            "type": call_type,
            "framework_id": self.framework_id,
            "executor_id": self.executor_id,
            **payload,
        }

    def _auth_headers(self) -> dict[str, str]:
        token = self.agent.auth_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _send(self, body, path=API_PATH, method="POST", headers=None):
        """POST one call on the reused call connection (pymesos's, plus auth and typed errors).

        A kept-alive connection the agent has closed fails on first use; the call is then
        tried once more on a fresh one (the agent ignores a duplicated update uuid).
        """
        data = json.dumps(body).encode("utf-8")
        request_headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **self._auth_headers(),
            **(headers or {}),
        }
        for attempt in (1, 2):
            with self._lock:
                conn = self._get_conn()
                if conn is None:
                    raise AgentUnavailable("not subscribed to the agent")
                try:
                    conn.request(method, path, body=data, headers=request_headers)
                    response = conn.getresponse()
                    text = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise AgentUnavailable(str(exc) or type(exc).__name__) from None
                    continue
            if 200 <= response.status < 300:
                return {}
            answer = text.decode("utf-8", "replace").strip()
            if response.status >= 500 or response.status == 403:
                # Recovering (503) or between streams ("Executor is not subscribed"): the
                # next SUBSCRIBE carries the call's update.
                raise AgentUnavailable(f"the agent answered {response.status}: {answer}")
            raise AgentRejected(response.status, answer)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- subscribing -------------------------------------------------------------------------

    def gen_request(self) -> bytes:
        """The SUBSCRIBE request, with every unacknowledged task and update, and auth."""
        updates = dict(self.updates)
        self._subscribed_with = set(updates)
        body = json.dumps(
            self._call(
                "SUBSCRIBE",
                subscribe={
                    "unacknowledged_tasks": list(self.tasks.values()),
                    "unacknowledged_updates": list(updates.values()),
                },
            )
        ).encode("utf-8")
        lines = [
            f"POST {API_PATH} HTTP/1.1",
            f"Host: {self.master}",
            "Content-Type: application/json",
            "Accept: application/json",
            "Connection: close",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in self._auth_headers().items()),
        ]
        if not self.aborted and (updates or self._disconnected_since is not None):
            log.info(
                "subscribing to the agent at %s with %d unacknowledged update(s)",
                self.master,
                len(updates),
            )
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body

    def on_subscribed(self, info: dict) -> None:
        self._disconnected_since = None
        self._attempt = 0
        super().on_subscribed(info)
        # Updates filed after the SUBSCRIBE was built were neither in it nor deliverable.
        missed = [
            (k, u["status"])
            for k, u in list(self.updates.items())
            if k not in self._subscribed_with
        ]
        if missed:
            threading.Thread(
                target=self._resend, args=(missed,), name="resend", daemon=True
            ).start()

    def _resend(self, missed: list[tuple[uuid.UUID, dict]]) -> None:
        for key, status in missed:
            if key in self.updates:
                self._deliver(key, status)

    def on_acknowledged(self, event: dict) -> None:
        with self._acks:
            super().on_acknowledged(event)
            self._acks.notify_all()

    def on_close(self) -> None:
        """The stream ended or an attempt failed: re-subscribe on Mesos's schedule, or give up.

        Runs on the I/O thread, which reconnects as soon as this returns.
        """
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if self.aborted:
            return  # stopping: no reconnecting
        now = time.monotonic()
        if self.stream_id is not None:  # a live subscription ended
            self._disconnected_since = now
            self._attempt = 0
            log.warning("disconnected from the agent at %s", self.master)
            self.executor.disconnected(self)
            if not self.checkpoint:
                log.warning(
                    "checkpointing is off, so the agent will not take this executor "
                    "back: shutting down"
                )
                self._give_up()
            return  # first attempt at once: the agent may only have dropped the connection
        if self._disconnected_since is None:
            self._disconnected_since = now  # the very first SUBSCRIBE failed
        if now - self._disconnected_since >= self.agent.recovery_timeout:
            log.error(
                "could not re-subscribe within the recovery timeout (%gs): shutting down",
                self.agent.recovery_timeout,
            )
            self._give_up()
            return
        delay = reconnect_delay(self._attempt, self.agent.subscription_backoff_max)
        self._attempt += 1
        log.info("agent at %s not available; subscribing again in %.2fs", self.master, delay)
        self._stopping.wait(delay)

    def _backoff(self, num_conn_retry: int) -> float:
        return 0.0  # on_close has already waited (pymesos calls this after it)

    def _give_up(self) -> None:
        """What libmesos does when it cannot stay subscribed: shut down within the grace."""
        self.arm_self_kill()
        self.executor.shutdown(self)
        self.stop()

    # -- events ------------------------------------------------------------------------------

    def on_kill(self, event: dict) -> None:
        policy = event.get("kill_policy")
        if policy:
            self._kill_policies[event["task_id"]["value"]] = policy
        super().on_kill(event)

    def take_kill_policy(self, task_id: str) -> dict | None:
        """The ``kill_policy`` of the last KILL for ``task_id`` (pymesos drops it)."""
        return self._kill_policies.pop(task_id, None)

    def on_shutdown(self) -> None:
        # Unlike pymesos, keep the stream open: the executor stops the driver when it is done.
        log.info("SHUTDOWN from the agent (grace period %gs)", self.grace_shutdown_period)
        self.arm_self_kill()
        self.executor.shutdown(self)

    # -- ending ------------------------------------------------------------------------------

    def arm_self_kill(self) -> float:
        """Start the shutdown grace timer (once) and return its deadline (monotonic).

        When it fires, every task process group is SIGKILLed, then — as libmesos and
        pymesos do — the executor's own group, unless ``MESOS_LOCAL`` is set.
        """
        with self._self_kill_lock:
            if self.shutdown_deadline is None:
                self.shutdown_deadline = time.monotonic() + self.grace_shutdown_period
                threading.Thread(target=self._self_kill, name="self-kill", daemon=True).start()
            return self.shutdown_deadline

    def _delay_kill(self) -> None:
        self.arm_self_kill()

    def _self_kill(self) -> None:
        assert self.shutdown_deadline is not None
        time.sleep(max(0.0, self.shutdown_deadline - time.monotonic()))
        killed = GROUPS.kill_all()
        log.warning(
            "SIGKILL: the shutdown grace period (%gs) is over; task group(s) killed: %s%s",
            self.grace_shutdown_period,
            ", ".join(map(str, killed)) or "none left",
            "" if self.local else "; killing the executor",
        )
        if self.local:
            return
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.killpg(0, signal.SIGKILL)

    @property
    def io_failed(self) -> bool:
        """The I/O thread stopped without being asked (pymesos then raises SIGINT in main)."""
        return self.aborted and not self._stop_requested

    def stop(self) -> None:
        self._stop_requested = True
        self._stopping.set()
        super().stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the I/O thread to end (at most ``timeout``)."""
        thread = self._io_thread
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                self._io_thread = None

    def _shutdown(self) -> None:
        # pymesos calls this when its I/O thread ends, for whatever reason.
        if not self._stop_requested:
            # It died on an error (a 401, a broken stream...). pymesos also "interrupts" the
            # main thread, but a simulated SIGINT does not wake a blocked wait: act here.
            self.failed = True
            log.error("the connection to the agent failed for good: shutting down")
            self.arm_self_kill()
            self.executor.shutdown(self)
        self.closed.set()
        with self._acks:
            self._acks.notify_all()


def _describe_status(status: dict) -> str:
    text = status.get("state", "?")
    if "healthy" in status:
        text += f" (healthy={str(status['healthy']).lower()})"
    return f"{text} for task {status.get('task_id', {}).get('value', '?')}"
