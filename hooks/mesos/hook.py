"""``register mesos`` / ``deregister mesos``: the original hook's Mesos mode.

The task is found in the agent's ``/state`` by ``MESOS_FRAMEWORK_ID`` and
``MESOS_EXECUTOR_ID``; services are registered at ``HOST`` with the same label
rules as the executor, minus its ``marathon`` and ``marathon-task:`` tags.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from hooks.consul import ConsulConfig, ServiceInstance
from hooks.errors import ConsulError
from hooks.mesos.agent import fetch_state, find_task, required
from hooks.mesos.provider import Rules, services_from_task

log = logging.getLogger(__name__)


def task_services(
    consul: ConsulConfig, env: Mapping[str, str], agent_url: str
) -> list[ServiceInstance]:
    framework_id = required(env, "MESOS_FRAMEWORK_ID")
    executor_id = required(env, "MESOS_EXECUTOR_ID")
    host = required(env, "HOST")
    task = find_task(fetch_state(agent_url), framework_id, executor_id)
    rules = Rules(
        global_tag=None, task_tag=False, deregister_critical_after=consul.deregister_critical_after
    )
    return services_from_task(task, host, rules)


def register(consul: ConsulConfig, env: Mapping[str, str], *, agent_url: str) -> int:
    from hooks.consul import ConsulClient, Registrar

    services = task_services(consul, env, agent_url)
    log.info("found %d service(s) to register", len(services))
    if services:
        Registrar(ConsulClient(consul)).register(services)
    return 0


def deregister(consul: ConsulConfig, env: Mapping[str, str], *, agent_url: str) -> int:
    from hooks.consul import ConsulClient, Registrar

    services = task_services(consul, env, agent_url)
    log.info("found %d service(s) to deregister", len(services))
    failures = Registrar(ConsulClient(consul)).deregister(services) if services else []
    if failures:
        raise ConsulError("; ".join(failures))
    return 0
