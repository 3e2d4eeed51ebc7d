"""The task's process: which command, in which environment, and how to stop all of it.

The task runs in its own session (hence its own process group), away from the
executor's group, which pymesos SIGKILLs at the end of a SHUTDOWN; the executor
signals the task's whole group so children go too. Every group the executor
starts is listed in :data:`GROUPS` until it is gone, so any exit path — including
pymesos's self-kill timer — can SIGKILL what is left.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

from hooks.errors import SourceError

log = logging.getLogger(__name__)

#: what Marathon puts before the app's command in ``executor.command.value``
MARATHON_PREFIX = re.compile(r"\s*chmod ug\+rx '(?P<path>[^']*)' && exec '(?P=path)'(?: |$)")
#: variables only the executor may see (libmesos removes the token from its env too)
EXECUTOR_ONLY_VARIABLES = ("MESOS_EXECUTOR_AUTHENTICATION_TOKEN",)


class Command(NamedTuple):
    """How to run the task: a shell line, or an executable with its argv."""

    value: str
    shell: bool = True
    arguments: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()

    def argv(self) -> list[str]:
        if self.shell:
            return ["/bin/sh", "-c", self.value]
        return list(self.arguments) or [self.value]

    def describe(self) -> str:
        return self.value if self.shell else " ".join(self.argv())


def command_from_task(task: Mapping) -> Command:
    """``TaskInfo.command`` when present, else the executor's command minus Marathon's prefix."""
    own = task.get("command")
    if own and (own.get("value") or own.get("arguments")):
        return _command(own, own.get("value") or "")
    executor_command = (task.get("executor") or {}).get("command") or {}
    value = executor_command.get("value") or ""
    match = MARATHON_PREFIX.match(value)
    if not match:
        raise SourceError(
            "the task has no command: TaskInfo.command is empty and executor.command.value "
            "does not start with Marathon's \"chmod ug+rx '<executor>' && exec '<executor>'\""
        )
    rest = value[match.end() :].strip()
    if not rest:
        raise SourceError("the task has no command (the Marathon app has neither cmd nor args)")
    return _command(executor_command, rest, shell=True)


def _command(info: Mapping, value: str, shell: bool | None = None) -> Command:
    arguments = tuple(str(a) for a in info.get("arguments") or ())
    use_shell = info.get("shell", True) if shell is None else shell
    if not use_shell and not value:
        raise SourceError("TaskInfo.command has shell=false but no value (the executable)")
    return Command(
        value=value,
        shell=bool(use_shell),
        arguments=arguments,
        environment=environment_of(info),
    )


def environment_of(command_info: Mapping) -> tuple[tuple[str, str], ...]:
    """Plain ``VALUE`` variables of a ``CommandInfo.environment`` (secrets are not ours)."""
    variables = ((command_info.get("environment") or {}).get("variables")) or []
    return tuple(
        (str(v["name"]), str(v.get("value", "")))
        for v in variables
        if v.get("name") and v.get("type", "VALUE") == "VALUE"
    )


def task_environment(base: Mapping[str, str], command: Command) -> dict[str, str]:
    """The executor's environment minus executor-only secrets, plus the command's variables.

    ``CONSUL_*`` variables stay: they reach the executor through the app's own env,
    so the task may rely on them just as well.
    """
    env = {k: v for k, v in base.items() if k not in EXECUTOR_ONLY_VARIABLES}
    env.update(command.environment)
    return env


class ProcessGroups:
    """Process groups started by this executor that may still have members."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def kill_all(self) -> list[int]:
        """SIGKILL every listed group; return those that still had live members."""
        with self._lock:
            groups = sorted(self._groups)
        return [pgid for pgid in groups if group_alive(pgid) and signal_group(pgid, signal.SIGKILL)]


#: every task and health-check command group of this process
GROUPS = ProcessGroups()


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; ``False`` when it has no members left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only a zombie-led group whose pid got reused could answer this; treat it as gone.
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie.

    ``killpg(pgid, 0)`` also counts zombies, and orphaned task processes stay zombies
    until init reaps them (which some container inits do only every second or so).
    """
    try:
        entries = os.scandir("/proc")
    except OSError:
        return signal_group(pgid, 0)  # no procfs: zombies count as members
    with entries:
        for entry in entries:
            if entry.name.isdigit() and _live_member(entry.name, pgid):
                return True
    return False


def _live_member(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return False  # gone meanwhile
    return len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"


class TaskProcess:
    """The running task: its own session, a reaper thread, and group-wide signals."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        #: the task is its own session leader, so its group id is its pid
        self.pgid = popen.pid
        self.returncode: int | None = None
        self.exited = threading.Event()
        GROUPS.add(self.pgid)

    @classmethod
    def start(cls, command: Command, env: Mapping[str, str], cwd: str) -> TaskProcess:
        """Start ``command`` in its own session, with stdout/stderr inherited."""
        argv = command.argv()
        popen = subprocess.Popen(
            argv,
            executable=None if command.shell or not command.value else command.value,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        log.info(
            "task started: pid %d (its own process group) running %s", popen.pid, command.describe()
        )
        return cls(popen)

    def watch(self, on_exit: Callable[[int], None]) -> None:
        """Call ``on_exit(returncode)`` from a reaper thread as soon as the task ends."""

        def reap() -> None:
            # A blocking waitpid: the exit is seen at once, without polling.
            self.returncode = self._popen.wait()
            self.exited.set()
            on_exit(self.returncode)

        threading.Thread(target=reap, name=f"reaper-{self.pid}", daemon=True).start()

    def signal(self, sig: int) -> bool:
        """Signal the task's whole process group; ``False`` when nothing is left in it."""
        return signal_group(self.pgid, sig)

    def group_alive(self) -> bool:
        return group_alive(self.pgid)

    def kill_leftovers(self) -> bool:
        """SIGKILL whatever is left of the group once the task itself is gone."""
        killed = group_alive(self.pgid) and signal_group(self.pgid, signal.SIGKILL)
        if killed:
            log.info(
                "SIGKILL sent to task group %d: processes left after the task ended", self.pgid
            )
        GROUPS.discard(self.pgid)
        return killed
