"""The executor's tasks as a whole: the callbacks' one entry, and when the executor is done."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from executor.lifecycle import TASK_KILLING_STATE, Context, Reporter, TaskLifecycle

log = logging.getLogger(__name__)


class Supervisor:
    """The tasks of this executor, and when the executor is done (the callbacks' one entry)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskLifecycle] = {}
        self._stopping = False
        self._done = threading.Event()

    def bind(self, reporter: Reporter) -> None:
        self.ctx.reporter = reporter

    def subscribed(self, framework_info: Mapping) -> None:
        capabilities = {c.get("type") for c in framework_info.get("capabilities") or []}
        self.ctx.task_killing = TASK_KILLING_STATE in capabilities

    def launch(self, task: dict) -> None:
        lifecycle = TaskLifecycle(task, self.ctx, self._finished)
        with self._lock:
            refuse = self._stopping
            self._tasks[lifecycle.task_id] = lifecycle
        if refuse:
            lifecycle.reject("the executor is shutting down")
        else:
            lifecycle.launch()

    def reject(self, task: dict, message: str) -> None:
        """Answer a task this executor cannot run with TASK_FAILED."""
        lifecycle = TaskLifecycle(task, self.ctx, self._finished)
        with self._lock:
            self._tasks[lifecycle.task_id] = lifecycle
        lifecycle.reject(message)

    def kill(self, task_id: str, kill_policy: Mapping | None) -> None:
        lifecycle = self._tasks.get(task_id)
        if lifecycle is None:
            log.warning("KILL for unknown task %s ignored", task_id)
            return
        lifecycle.kill(kill_policy)

    def shutdown(self, deadline: float) -> None:
        """Stop every task by ``deadline`` (monotonic) and end the executor."""
        for lifecycle in self._begin_stopping():
            lifecycle.shutdown(deadline)
        self._check_done()

    def stop_all(self, why: str) -> None:
        """Stop every task gracefully (a signal to the executor) and end the executor."""
        for lifecycle in self._begin_stopping():
            lifecycle.kill(None, why)
        self._check_done()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the executor is done; its exit code (``None`` on timeout)."""
        if not self._done.wait(timeout):
            return None
        with self._lock:
            acked = all(t.acknowledged for t in self._tasks.values())
        return 0 if acked else 1

    def _begin_stopping(self) -> list[TaskLifecycle]:
        with self._lock:
            self._stopping = True
            return list(self._tasks.values())

    def _finished(self, _lifecycle: TaskLifecycle) -> None:
        """``on_finished`` callback of each task (called with the task)."""
        self._check_done()

    def _check_done(self) -> None:
        with self._lock:
            tasks = list(self._tasks.values())
            # One executor per task: once its tasks are over (or it was told to stop), it ends.
            if (tasks or self._stopping) and all(t.finished.is_set() for t in tasks):
                self._done.set()
