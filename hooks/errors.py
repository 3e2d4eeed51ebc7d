"""Errors a user sees as one line on stderr (or in a ``TASK_FAILED`` message).

Every failure the tool expects is one of these; the CLI prints ``str(error)``
and exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HookError(Exception):
    """Base class: the message is complete and fit for a user."""


class ConfigError(HookError):
    """A setting, flag, environment variable or file the user gave is wrong."""


class ConsulError(HookError):
    """Consul refused or could not be reached within the deadline."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SourceError(HookError):
    """The workload's description (pod, TaskInfo, agent state) is missing or invalid."""
