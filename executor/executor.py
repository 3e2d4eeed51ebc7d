"""The ``pymesos.Executor`` callbacks: thin, quick, and never raising.

pymesos runs them on its I/O thread, which reads the agent's stream: while one
runs, no KILL or ACKNOWLEDGED is read, and an exception kills the thread. So each
callback hands its event to the :class:`~executor.supervisor.Supervisor` (which
starts threads for anything slow) and returns.
"""

from __future__ import annotations

import functools
import logging

from pymesos.interface import Executor

from executor.supervisor import Supervisor

log = logging.getLogger(__name__)


def _never_raise(callback):
    @functools.wraps(callback)
    def safe(self, *args):
        try:
            callback(self, *args)
        except Exception:  # an escaping exception would kill the driver's I/O thread
            log.exception("error handling %s", callback.__name__)

    return safe


class ConsulExecutor(Executor):
    """Forwards the agent's events to a :class:`Supervisor`."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    @_never_raise
    def registered(self, driver, executor_info, framework_info, agent_info) -> None:
        log.info(
            "subscribed to the agent (framework %s, checkpoint %s)",
            (framework_info.get("id") or {}).get("value"),
            driver.checkpoint,
        )
        self.supervisor.subscribed(framework_info)

    @_never_raise
    def reregistered(self, driver, agent_info) -> None:
        log.info("re-subscribed to the agent")

    @_never_raise
    def disconnected(self, driver) -> None:
        # The driver re-subscribes (checkpointing) or shuts the executor down; nothing to do.
        pass

    @_never_raise
    def launchTask(self, driver, task) -> None:  # pymesos names its callbacks in camelCase
        self.supervisor.launch(task)

    @_never_raise
    def launchTaskGroup(self, driver, task_infos) -> None:
        for task in task_infos:
            self.supervisor.reject(
                task, "task groups (LAUNCH_GROUP) are not supported by consul-mesos-executor"
            )

    @_never_raise
    def killTask(self, driver, taskId) -> None:
        task_id = taskId["value"]
        self.supervisor.kill(task_id, driver.take_kill_policy(task_id))

    @_never_raise
    def frameworkMessage(self, driver, message) -> None:
        log.debug("framework message ignored")

    @_never_raise
    def shutdown(self, driver) -> None:
        self.supervisor.shutdown(driver.arm_self_kill())

    @_never_raise
    def error(self, driver, message) -> None:
        log.error("error from the agent: %s", message)
