"""Reading this task's description from the Mesos agent's ``/state`` endpoint."""

from __future__ import annotations

from collections.abc import Mapping

from hooks.errors import ConfigError, SourceError

STATE_TIMEOUT = 10.0


def fetch_state(agent_url: str) -> dict:
    """The agent's ``/state`` document; :class:`SourceError` when it cannot be had."""
    import requests

    url = agent_url.rstrip("/") + "/state"
    try:
        response = requests.get(url, timeout=STATE_TIMEOUT)
    except requests.RequestException as exc:
        raise SourceError(f"cannot read Mesos agent state at {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise SourceError(f"Mesos agent state at {url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise SourceError(f"Mesos agent state at {url} is not JSON") from None


def find_task(state: Mapping, framework_id: str, executor_id: str) -> dict:
    """The (first) task the executor ``executor_id`` of ``framework_id`` runs."""
    try:
        return _find_task(state, framework_id, executor_id)
    except (AttributeError, TypeError, KeyError, IndexError):
        raise SourceError("the Mesos agent's state is not shaped like Mesos's /state") from None


def _find_task(state: Mapping, framework_id: str, executor_id: str) -> dict:
    for framework in state.get("frameworks") or []:
        if framework.get("id") != framework_id:
            continue
        for executor in framework.get("executors") or []:
            if executor.get("id") == executor_id and executor.get("tasks"):
                return executor["tasks"][0]
    raise SourceError(
        f"the Mesos agent runs no task for executor {executor_id} of framework {framework_id}"
    )


def required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"{name} is not set (the Mesos agent sets it for executors)")
    return value
