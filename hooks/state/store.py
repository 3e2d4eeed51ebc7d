"""A tiny file store: the service ids and names registered for one workload.

``register`` saves them; ``deregister`` falls back to them when the source of
truth (the pod) can no longer be read — preStop often runs while the API
server is slow or the pod is half torn down. Writes are atomic (temp file +
rename) so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hooks.consul.model import ServiceInstance

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def default_state_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "consul-registration-hook")


class StateStore:
    """Saves and loads the registered services of workloads, one file per key."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / (_UNSAFE.sub("_", key) + ".json")

    def save(self, key: str, services: Sequence[ServiceInstance]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        records = [{"id": s.id, "name": s.name} for s in services]
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-")
        with os.fdopen(fd, "w") as handle:
            json.dump(records, handle)
        os.replace(tmp, self._path(key))

    def load(self, key: str) -> list[ServiceInstance]:
        """The services saved for ``key``; empty when nothing (readable) was saved."""
        try:
            records = json.loads(self._path(key).read_text())
            return [ServiceInstance(r["id"], r["name"], "", 0) for r in records]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def clear(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
