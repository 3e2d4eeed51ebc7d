"""``register k8s`` and ``deregister k8s``: the pod's postStart and preStop hooks.

The pod is ``KUBERNETES_POD_NAMESPACE``/``KUBERNETES_POD_NAME``; what it
registers follows :mod:`hooks.k8s.provider`. This module only orders the I/O:

register
    1. read the pod, retrying every 0.5 s until it has an IP (``KUBERNETES_POD_IP``
       counts, so the API need not have published one) — at most ``get_pod_timeout``;
    2. deregister stale ``<id>-secured`` twins of the ids about to be registered;
    3. wait for the first container's startupProbe (else readinessProbe) to pass —
       at most ``health_check_timeout`` (0: do not wait);
    4. read the pod again and stop (exit 0) if it is being deleted meanwhile;
    5. register all services (all or nothing) and record them in the state file.

deregister
    Deregisters what the pod describes now plus anything the state file recorded
    at registration; when the pod cannot be read, the state file alone. Then the
    state file is cleared.

Both return the exit code (0) or raise a :class:`~hooks.errors.HookError` with a
one-line message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hooks.consul import ConsulConfig, ServiceInstance
from hooks.errors import ConsulError, HookError, SourceError
from hooks.k8s import provider
from hooks.k8s.provider import PodRef
from hooks.state import StateStore, default_state_dir

if TYPE_CHECKING:
    from hooks.consul.client import ConsulClient
    from hooks.k8s.api import KubeAPI

log = logging.getLogger(__name__)

#: how often the pod is read again while it has no IP or the API is unreachable
POD_POLL_INTERVAL = 0.5


def register(
    consul: ConsulConfig,
    env: Mapping[str, str],
    *,
    get_pod_timeout: float,
    health_check_timeout: float,
    state_dir: str | None,
) -> int:
    """Register this pod's services once it is healthy; see the module docstring."""
    from hooks.consul import ConsulClient, Registrar
    from hooks.k8s.api import KubeAPI

    ref = provider.pod_ref(env)
    if env.get("PORT_DEFINITIONS", "").strip():
        # Fail on a malformed variable before waiting for anything.
        provider.parse_port_definitions(env["PORT_DEFINITIONS"])
    api = KubeAPI.from_env(env)
    try:
        pod = read_pod(api, ref, env, timeout=get_pod_timeout, wait_for_ip=True)
        if provider.service_name(pod) is None:
            log.info('pod %s has no "%s" label; nothing to register', ref, provider.SERVICE_LABEL)
            return 0
        ip = provider.pod_ip(pod, env) or ""
        services = provider.services(
            pod,
            env,
            ip=ip,
            node_labels=_node_labels(api, pod, get_pod_timeout),
            deregister_critical_after=consul.deregister_critical_after,
        )
        client = ConsulClient(consul)
        try:
            _remove_stale_twins(client, services)
            _wait_healthy(pod, ip, health_check_timeout)
            if provider.is_terminating(read_pod(api, ref, env, timeout=get_pod_timeout)):
                log.info("pod %s is being deleted; not registering it", ref)
                return 0
            Registrar(client).register(services)
        finally:
            client.close()
    finally:
        api.close()
    _remember(StateStore(state_dir or default_state_dir()), ref, services)
    return 0


def deregister(
    consul: ConsulConfig,
    env: Mapping[str, str],
    *,
    get_pod_timeout: float,
    state_dir: str | None,
) -> int:
    """Deregister this pod's services, as the pod and the state file list them; see above."""
    from hooks.consul import ConsulClient, Registrar

    ref = provider.pod_ref(env)
    store = StateStore(state_dir or default_state_dir())
    recorded = store.load(ref.key)
    current = _current_services(env, ref, get_pod_timeout, len(recorded))
    known = {s.id for s in current}
    services = [*current, *(s for s in recorded if s.id not in known)]
    if not services:
        log.info("pod %s has nothing registered to deregister", ref)
        store.clear(ref.key)
        return 0
    client = ConsulClient(consul)
    try:
        failures = Registrar(client).deregister(services)
    finally:
        client.close()
    if failures:
        raise ConsulError("; ".join(failures))
    store.clear(ref.key)
    return 0


def read_pod(
    api: KubeAPI, ref: PodRef, env: Mapping[str, str], *, timeout: float, wait_for_ip: bool = False
) -> dict:
    """The pod, read again every 0.5 s on transient errors (and, if asked, until it has an IP).

    Only a pod with the ``consul`` label waits for an IP: an unlabelled one has
    nothing to register. A definitive API answer (401, 403, 404, garbage) is
    raised at once; after ``timeout`` the last problem is raised as a
    :class:`SourceError`.
    """
    from hooks.k8s.api import KubeAPIError

    deadline = time.monotonic() + timeout
    last_error: KubeAPIError | None = None
    said_waiting = False
    while True:
        try:
            pod = api.get_pod(ref.namespace, ref.name, timeout=deadline - time.monotonic())
        except KubeAPIError as exc:
            if not exc.transient:
                raise
            if last_error is None:
                log.warning("cannot read pod %s, retrying: %s", ref, exc)
            last_error = exc
        else:
            last_error = None
            if not wait_for_ip or provider.service_name(pod) is None or provider.pod_ip(pod, env):
                return pod
            if not said_waiting:
                log.info("pod %s has no IP in the API yet; waiting for it", ref)
                said_waiting = True
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(POD_POLL_INTERVAL, left))
    if last_error is not None:
        raise SourceError(f"cannot read pod {ref} within {timeout:g}s: {last_error}")
    raise SourceError(f"pod {ref} has no IP after {timeout:g}s")


def _node_labels(api: KubeAPI, pod: Mapping, timeout: float) -> Mapping[str, str] | None:
    """The node's labels for topology tags; ``None`` (with a warning) when unreadable."""
    from hooks.k8s.api import KubeAPIError

    node = provider.node_name(pod)
    if not node:
        return None
    try:
        labels = (api.get_node(node, timeout=timeout).get("metadata") or {}).get("labels")
    except KubeAPIError as exc:
        # Reading nodes needs a ClusterRole many setups do not grant; tags are optional.
        log.warning("registering without zone/region tags, cannot read node %s: %s", node, exc)
        return None
    return labels if isinstance(labels, Mapping) else {}


def _wait_healthy(pod: Mapping, ip: str, timeout: float) -> None:
    """Wait for the probe :func:`provider.wait_probe` picks; nothing to wait for without one.

    A ``timeout`` of 0 turns the wait off, as ``--catalog-wait 0`` does for the catalog.
    """
    from hooks.k8s.probe import wait_until_passing

    probe = provider.wait_probe(pod)
    if probe is None:
        return
    if timeout <= 0:
        log.info("not waiting for the container's probe (health check timeout is 0)")
        return
    container, field, definition = probe
    what = f'{field} of container "{container.get("name", "")}"'
    wait_until_passing(definition, container, ip, timeout, what=what)


def _remove_stale_twins(client: ConsulClient, services: Sequence[ServiceInstance]) -> None:
    """Deregister ``<id>-secured`` leftovers of an earlier instance at the same address."""
    for service_id in provider.stale_secured_ids(services):
        try:
            if client.deregister(service_id):
                log.info("deregistered stale service id %s", service_id)
        except ConsulError as exc:
            if exc.status is None:
                raise  # Consul unreachable: registering cannot work either
            # Refused (e.g. no ACL rights on the -secured name): a leftover twin is not
            # worth failing the pod for; the registration reports any real problem.
            log.warning("cannot remove stale service id %s, going on: %s", service_id, exc)


def _current_services(
    env: Mapping[str, str], ref: PodRef, timeout: float, recorded: int
) -> list[ServiceInstance]:
    """What the pod describes now; empty (with a warning) when that cannot be known."""
    from hooks.k8s.api import KubeAPI

    try:
        api = KubeAPI.from_env(env)
        try:
            pod = read_pod(api, ref, env, timeout=timeout)
        finally:
            api.close()
        if provider.service_name(pod) is None:
            return []
        ip = provider.pod_ip(pod, env)
        if not ip:
            raise SourceError(f"pod {ref} has no IP")
        return provider.services(pod, env, ip=ip)
    except HookError as exc:
        # preStop must still clean up when the pod is gone or the API is down.
        if recorded:
            log.warning(
                "cannot tell which services pod %s has (%s); deregistering the %d service(s) "
                "recorded when it registered",
                ref,
                exc,
                recorded,
            )
        else:
            log.warning(
                "cannot tell which services pod %s has (%s), and no registration is recorded "
                "for it",
                ref,
                exc,
            )
        return []


def _remember(store: StateStore, ref: PodRef, services: Sequence[ServiceInstance]) -> None:
    try:
        store.save(ref.key, services)
    except OSError as exc:
        # Registration itself succeeded; only the preStop fallback is weakened.
        log.warning(
            "registered, but cannot record the service ids in %s (%s); deregistration will "
            "depend on the Kubernetes API",
            store.directory,
            exc.strerror or exc,
        )
