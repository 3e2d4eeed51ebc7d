"""The life of a task in this executor, from LAUNCH to its acknowledged terminal update.

    LAUNCH ─▶ TASK_STARTING ─▶ start the process ─┬─ no health check: register ─▶ TASK_RUNNING
                                                  └─ health check: TASK_RUNNING; first pass:
                                                     register ─▶ TASK_RUNNING healthy=true
    KILL / SHUTDOWN / signal / health exhausted / registration failed — the stop sequence:
       TASK_KILLING ─▶ deregister ─▶ propagation delay ─▶ SIGTERM group ─▶ grace ─▶ SIGKILL
       group ─▶ TASK_KILLED (or TASK_FAILED with the reason) ─▶ wait for the ACK
    the task exits by itself: deregister ─▶ TASK_FINISHED / TASK_FAILED ─▶ wait for the ACK

Everything slow runs on this module's threads (launch, stop sequence, reaper, health
checker), never on the driver's I/O thread. Three locks keep them honest:

* ``_cond`` guards the state (how the task ends, its exit code, the kill schedule) and
  wakes waits the moment the task exits or a SHUTDOWN tightens the schedule;
* ``_consul_lock`` orders Consul calls, so a deregistration always follows a
  registration still in flight — never a task left registered but dead;
* ``_report_lock`` orders status updates, so nothing but the terminal one follows it
  and no ``healthy: true`` is sent once the stop sequence has begun.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from executor.config import ExecutorConfig
from executor.schedule import SHUTDOWN_MARGIN, KillSchedule, grace_from_policy, secs
from executor.task import TaskProcess, command_from_task, describe_exit, task_environment
from hooks.consul.model import ServiceInstance
from hooks.durations import go_duration
from hooks.errors import HookError, SourceError
from hooks.mesos.provider import Rules, services_from_task

if TYPE_CHECKING:  # health checking loads only for tasks that have a check
    from executor.health import HealthChecker, HealthEvent, HealthSpec
    from executor.task import Command
    from hooks.consul.client import ConsulClient
    from hooks.consul.registrar import Registrar

log = logging.getLogger(__name__)

TASK_KILLING_STATE = "TASK_KILLING_STATE"
HEALTH_REASON = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
INVALID_REASON = "REASON_TASK_INVALID"
#: how long to wait for the agent to acknowledge a terminal update (as Mesos's executors)
ACK_TIMEOUT = 60.0
#: how long a SIGKILLed task may take to disappear before we stop waiting
SIGKILL_WAIT = 5.0
#: how often to look whether processes left in the task's group are gone
GROUP_POLL = 0.05


class Reporter(Protocol):
    """Where status updates go (the driver)."""

    def send_update(self, status: dict) -> uuid.UUID: ...

    def wait_acknowledged(self, key: uuid.UUID, timeout: float) -> bool: ...


class Ending(NamedTuple):
    """How a stop sequence reports its end."""

    state: str
    message: str
    reason: str | None = None


# -- shared context ------------------------------------------------------------------------


class Context:
    """What every task lifecycle shares: configuration, Consul, the agent, capabilities."""

    def __init__(
        self, config: ExecutorConfig, consul_client: ConsulClient, base_env: Mapping[str, str]
    ) -> None:
        from hooks.consul.registrar import Registrar

        self.config = config
        self.consul = consul_client
        self.registrar = Registrar(consul_client)
        self.base_env = base_env
        self.rules = Rules(
            global_tag=config.consul_global_tag,
            deregister_critical_after=config.deregister_critical_after,
        )
        self.reporter: Reporter | None = None
        #: the framework understands TASK_KILLING (from SUBSCRIBED)
        self.task_killing = False

    def bounded_registrar(self, budget: float) -> Registrar:
        """A registrar whose calls and catalog wait fit in ``budget`` seconds (SHUTDOWN).

        It has its own Consul client: close it (``registrar.client.close()``) once done."""
        from hooks.consul.client import ConsulClient
        from hooks.consul.registrar import Registrar

        half = max(0.05, budget / 2)
        client = ConsulClient(self.consul.config.with_(retry_deadline=half))
        return Registrar(client, catalog_wait=half)


# -- one task ------------------------------------------------------------------------------


class TaskLifecycle:
    """One launched task. All public methods return at once; the work runs on threads."""

    def __init__(self, task: dict, ctx: Context, on_finished: Callable[[TaskLifecycle], None]):
        self.task = task
        self.task_id = str((task.get("task_id") or {}).get("value") or "")
        self.ctx = ctx
        self._on_finished = on_finished
        self.finished = threading.Event()
        #: the terminal update was acknowledged by the agent
        self.acknowledged = False

        self._cond = threading.Condition()
        self._ending: Ending | None = None
        self._schedule: KillSchedule | None = None
        self._exit_code: int | None = None
        self._deadline: float | None = None
        self._process: TaskProcess | None = None
        self._launched = threading.Event()  # the launch thread is done deciding

        self._consul_lock = threading.Lock()
        self._services: list[ServiceInstance] = []
        self._consul_touched = False
        self._registered = False

        self._report_lock = threading.Lock()
        self._terminal_sent = False

        self._health: HealthSpec | None = None
        self._checker: HealthChecker | None = None
        self._ready = False  # registered (if it has services) and reported running
        self._env: dict[str, str] = {}
        # TaskInfo.kill_policy, else the configured default (a KILL's own policy wins).
        task_grace = grace_from_policy(task.get("kill_policy"))
        self._kill_grace = ctx.config.kill_grace_period if task_grace is None else task_grace

    # -- entry points (any thread) ------------------------------------------------------------

    def launch(self) -> None:
        self._spawn(self._launch, "launch")

    def kill(self, kill_policy: Mapping | None, why: str = "KILL from the agent") -> None:
        """Start the stop sequence (a second request changes nothing)."""
        grace = grace_from_policy(kill_policy)
        schedule = KillSchedule(
            self.ctx.config.propagation_delay, self._kill_grace if grace is None else grace
        )
        self._begin_stop(Ending("TASK_KILLED", f"killed: {why}"), schedule, why)

    def shutdown(self, deadline: float) -> None:
        """Stop within ``deadline`` (monotonic), shortening delay and grace to fit."""
        schedule = KillSchedule(self.ctx.config.propagation_delay, self._kill_grace)
        why = "the executor is shutting down"
        self._begin_stop(Ending("TASK_KILLED", f"killed: {why}"), schedule, why, deadline)

    def reject(self, message: str) -> None:
        """Answer the LAUNCH with TASK_FAILED without starting anything."""
        self._launched.set()
        self._spawn(lambda: self._finish(Ending("TASK_FAILED", message)), "reject")

    # -- launch ------------------------------------------------------------------------------

    def _launch(self) -> None:
        try:
            command = self._prepare()
        except SourceError as exc:
            log.error("cannot launch task %s: %s", self.task_id, exc)
            self._launched.set()
            self._finish(Ending("TASK_FAILED", str(exc), INVALID_REASON))
            return
        if self._is_ending():
            self._launched.set()  # killed before it started: the stop sequence reports it
            return
        self._report("TASK_STARTING")
        try:
            process = TaskProcess.start(command, self._env, self.ctx.config.agent.sandbox)
        except OSError as exc:
            self._launched.set()
            message = f"cannot start the task: {exc.strerror or exc}"
            log.error("%s", message)
            self._finish(Ending("TASK_FAILED", message))
            return
        with self._cond:
            self._process = process
        self._launched.set()
        process.watch(self._on_exit)
        if self._health is None:
            self._become_ready(healthy=None)
            return
        self._report("TASK_RUNNING")
        from executor.health import HealthChecker, make_probe

        probe = make_probe(self._health, self._env, self.ctx.config.agent.sandbox)
        checker = HealthChecker(self._health, probe, self._guarded(self._on_health))
        with self._cond:
            if self._ending is not None:
                return
            self._checker = checker
        checker.start()

    def _prepare(self) -> Command:
        """Read everything from the TaskInfo before anything starts; SourceError if invalid."""
        command = command_from_task(self.task)
        if self.task.get("health_check"):
            from executor.health import HealthSpec

            self._health = HealthSpec.from_task(self.task["health_check"])
        self._services = services_from_task(self.task, self.ctx.config.address, self.ctx.rules)
        self._env = task_environment(self.ctx.base_env, command)
        names = ", ".join(f"{s.name} ({s.id})" for s in self._services) or "none"
        log.info(
            "task %s: services to register: %s; health check: %s",
            self.task_id,
            names,
            self._health.describe() if self._health else "none",
        )
        return command

    def _become_ready(self, healthy: bool | None) -> bool:
        """Register every service (confirmed), then report TASK_RUNNING; on failure, stop."""
        with self._consul_lock:
            if self._is_ending():
                return False
            if self._services:
                self._consul_touched = True
                try:
                    self.ctx.registrar.register(self._services)
                except HookError as exc:
                    log.error("registration failed: %s", exc)
                    self._begin_stop(
                        Ending("TASK_FAILED", f"Consul registration failed: {exc}"),
                        self._default_schedule(),
                        "registration failed",
                    )
                    return False
                self._registered = True
        self._ready = True
        extra = {"healthy": healthy, "reason": HEALTH_REASON} if healthy is not None else {}
        return self._report("TASK_RUNNING", **extra)

    # -- health ------------------------------------------------------------------------------

    def _on_health(self, event: HealthEvent) -> None:
        if self._is_ending():
            return
        if event.healthy and not self._ready:
            log.info("health check passed for the first time: %s", event.output)
            self._become_ready(healthy=True)
            return
        self._update_ttl(event)
        if event.healthy:
            if event.changed:
                log.info("task is healthy again: %s", event.output)
                self._report("TASK_RUNNING", healthy=True, reason=HEALTH_REASON)
            return
        log.warning(
            "health check failed (%d/%d): %s",
            event.consecutive_failures,
            self._health.consecutive_failures if self._health else 0,
            event.output,
        )
        self._report("TASK_RUNNING", healthy=False, reason=HEALTH_REASON, message=event.output)
        if event.exhausted:
            message = (
                f"health check failed {event.consecutive_failures} times in a row: {event.output}"
            )
            self._begin_stop(
                Ending("TASK_FAILED", message, HEALTH_REASON),
                self._default_schedule(),
                "health check failures",
            )

    def _update_ttl(self, event: HealthEvent) -> None:
        """COMMAND checks are TTL checks in Consul: pass or fail them with our result."""
        if not self._health or self._health.kind != "COMMAND" or not self._registered:
            return
        status = "passing" if event.healthy else "critical"
        with self._consul_lock:
            if self._is_ending():
                return
            for service in self._services:
                try:
                    self.ctx.consul.update_ttl(service.check_id, status, event.output)
                except HookError as exc:
                    log.warning("cannot update the TTL check of %s: %s", service.id, exc)

    # -- stopping ----------------------------------------------------------------------------

    def _default_schedule(self) -> KillSchedule:
        return KillSchedule(self.ctx.config.propagation_delay, self._kill_grace)

    def _begin_stop(
        self, ending: Ending, schedule: KillSchedule, why: str, deadline: float | None = None
    ) -> None:
        with self._cond:
            if self._ending is not None:
                if deadline is not None:
                    self._tighten(deadline)
                else:
                    log.info("task %s is already stopping; %s changes nothing", self.task_id, why)
                return
            self._ending, self._schedule = ending, schedule
            if deadline is not None:
                self._tighten(deadline)
            self._cond.notify_all()
        log.info("stopping task %s: %s", self.task_id, why)
        self._spawn(self._stop_sequence, "stop")

    def _tighten(self, deadline: float) -> None:
        """Called with ``_cond`` held: fit what is left of the stop into ``deadline``."""
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        if self._schedule is not None:
            warning = self._schedule.tighten(deadline, time.monotonic())
            if warning:
                log.warning("%s", warning)
        self._cond.notify_all()

    def _stop_sequence(self) -> None:
        self._launched.wait()
        assert self._ending is not None and self._schedule is not None
        self._stop_checker()
        process = self._process
        if process is not None and self.ctx.task_killing:
            self._report("TASK_KILLING", even_when_ending=True)
        was_registered = self._deregister(self._schedule.deregister_budget)
        if process is not None:
            self._stop_process(process, self._schedule, propagate=was_registered)
        self._finish(self._ending)

    def _stop_process(self, process: TaskProcess, schedule: KillSchedule, propagate: bool) -> None:
        exited = False
        if propagate and schedule.delay > 0:
            with self._cond:
                delay = schedule.start_delay(time.monotonic())
            log.info("waiting %s propagation delay before stopping the task", secs(delay))
            exited = self._wait_exit(lambda: schedule.delay_end)
        if not exited:
            with self._cond:
                grace = schedule.start_grace(time.monotonic())
            if process.signal(signal.SIGTERM):
                log.info(
                    "SIGTERM sent to task group %d (kill grace period %s)",
                    process.pgid,
                    secs(grace),
                )
            exited = self._wait_exit(lambda: schedule.grace_end)
        if not exited:
            log.info(
                "SIGKILL sent to task group %d: still running after the kill grace period",
                process.pgid,
            )
            process.signal(signal.SIGKILL)
            process.exited.wait(SIGKILL_WAIT)
        elif schedule.grace_end is not None:
            self._wait_group_gone(process, lambda: schedule.grace_end)
        process.kill_leftovers()

    def _wait_exit(self, end: Callable[[], float | None]) -> bool:
        """Wait until the task exits or ``end()`` passes (re-read whenever woken)."""
        with self._cond:
            while self._exit_code is None:
                remaining = (end() or 0.0) - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _wait_group_gone(self, process: TaskProcess, end: Callable[[], float | None]) -> None:
        # Children left in the group got the SIGTERM too; they may use the rest of the grace.
        while process.group_alive():
            remaining = (end() or 0.0) - time.monotonic()
            if remaining <= 0:
                return
            with self._cond:
                self._cond.wait(min(GROUP_POLL, remaining))

    def _on_exit(self, returncode: int) -> None:
        """Reaper thread: the task's main process ended."""
        log.info(
            "task exited: pid %s %s",
            self._process.pid if self._process else "?",
            describe_exit(returncode),
        )
        with self._cond:
            self._exit_code = returncode
            self._cond.notify_all()
            if self._ending is not None:
                return  # the stop sequence was waiting for this
            if returncode == 0:
                self._ending = Ending("TASK_FINISHED", "the task exited with code 0")
            else:
                self._ending = Ending("TASK_FAILED", f"the task {describe_exit(returncode)}")
        self._guarded(self._after_exit)()

    def _after_exit(self) -> None:
        self._stop_checker()
        with self._cond:
            deadline = self._deadline
        # A SHUTDOWN already under way: TASK_FINISHED/FAILED must go out before its deadline.
        budget = None
        if deadline is not None:
            budget = max(0.05, deadline - time.monotonic() - SHUTDOWN_MARGIN)
        self._deregister(budget)
        if self._process is not None:
            self._process.kill_leftovers()
        assert self._ending is not None
        self._finish(self._ending)

    def _stop_checker(self) -> None:
        with self._cond:
            checker = self._checker
        if checker is not None:
            checker.stop()

    def _deregister(self, budget: float | None) -> bool:
        """Deregister after any registration in flight, taking at most ``budget`` seconds if
        set; ``True`` when the services had been registered (consumers may have seen them)."""
        outcome = {"was_registered": False}
        done = threading.Event()

        def deregister() -> None:
            try:
                with self._consul_lock:
                    if not self._consul_touched:
                        return
                    outcome["was_registered"] = self._registered
                    self._registered = False
                    if budget is None:
                        failures = self.ctx.registrar.deregister(self._services, wait=True)
                    else:
                        registrar = self.ctx.bounded_registrar(budget)
                        try:
                            failures = registrar.deregister(self._services, wait=True)
                        finally:
                            registrar.client.close()
                if failures:
                    log.warning(
                        "%d service(s) may still be registered: %s",
                        len(failures),
                        self._reap_note(),
                    )
            finally:
                done.set()

        if budget is None:
            deregister()
        else:
            # On a SHUTDOWN the deadline is hard: go on without waiting for a slow Consul.
            self._spawn(deregister, "deregister")
            if not done.wait(budget):
                log.error(
                    "deregistration still unfinished after %.2fs; going on: %s",
                    budget,
                    self._reap_note(),
                )
                return True
        return outcome["was_registered"]

    def _reap_note(self) -> str:
        if self._health is None:
            return "the service has no check, so Consul keeps it until it is deregistered by hand"
        after = go_duration(self.ctx.config.deregister_critical_after)
        return (
            f"Consul removes it once its check has been critical for {after} "
            "(DeregisterCriticalServiceAfter)"
        )

    # -- reporting ---------------------------------------------------------------------------

    def _report(self, state: str, *, even_when_ending: bool = False, **fields) -> bool:
        """Send a non-terminal update, unless the task is ending (or already reported ended)."""
        with self._report_lock:
            if self._terminal_sent or (not even_when_ending and self._is_ending()):
                return False
            self._reporter().send_update(self._status(state, **fields))
            return True

    def _finish(self, ending: Ending) -> None:
        """Send the one terminal update, wait for its acknowledgement, and say so."""
        with self._report_lock:
            if self._terminal_sent:
                return
            self._terminal_sent = True
            key = self._reporter().send_update(
                self._status(ending.state, message=ending.message, reason=ending.reason)
            )
        with self._cond:
            deadline = self._deadline
        started = time.monotonic()
        timeout = ACK_TIMEOUT if deadline is None else max(0.0, deadline - started - 0.2)
        self.acknowledged = self._reporter().wait_acknowledged(key, timeout)
        if not self.acknowledged:
            log.warning(
                "no acknowledgement of %s from the agent (gave up after %.2fs)",
                ending.state,
                time.monotonic() - started,
            )
        self.finished.set()
        self._on_finished(self)

    def _status(self, state: str, *, message=None, healthy=None, reason=None) -> dict:
        status: dict = {"task_id": {"value": self.task_id}, "state": state}
        if message:
            status["message"] = message
        if healthy is not None:
            status["healthy"] = healthy
        if reason:
            status["reason"] = reason
        return status

    def _reporter(self) -> Reporter:
        assert self.ctx.reporter is not None, "bind the driver before launching tasks"
        return self.ctx.reporter

    # -- plumbing ----------------------------------------------------------------------------

    def _is_ending(self) -> bool:
        with self._cond:
            return self._ending is not None

    def _spawn(self, target: Callable[[], None], what: str) -> None:
        threading.Thread(
            target=self._guarded(target), name=f"{what}-{self.task_id[:24]}", daemon=True
        ).start()

    def _guarded(self, target: Callable[..., None]) -> Callable[..., None]:
        """Run ``target``; a bug in it stops the task with TASK_FAILED instead of stranding it."""

        def run(*args) -> None:
            try:
                target(*args)
            except Exception as exc:  # the last line of defence; logged in full
                log.exception("internal error in task %s", self.task_id)
                message = f"executor internal error: {type(exc).__name__}: {exc}"
                with self._cond:
                    stopping = self._ending is not None
                if stopping or self._process is None:
                    self._launched.set()
                    self._finish(Ending("TASK_FAILED", message))
                else:
                    self._begin_stop(
                        Ending("TASK_FAILED", message), self._default_schedule(), "internal error"
                    )

        return run
