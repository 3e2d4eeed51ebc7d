"""Pod → Consul services: the original hook's Kubernetes rules, as pure functions.

Everything here reads plain dicts as the Kubernetes API returns them (a Pod,
a Node's labels) and the hook's environment, and returns values; nothing talks
to the network, so the rules are tested as tables.

The rules, in short:

* The pod label ``consul`` names the service; without it nothing is registered.
* Every service gets the global tags ``k8sPodName: <pod>``,
  ``k8sPodNamespace: <ns>``, the node's ``zone:``/``region:`` and the values of
  the pod annotations ``CONSUL_TAG_*`` (sorted by key).
* Without ``PORT_DEFINITIONS``: one service on the first port of the container
  named by the pod label ``consulContainer`` (else of the first container with
  ports), checked like that container's readiness (else liveness) probe.
* With ``PORT_DEFINITIONS``: one service per selected port (see
  :func:`services`), all checked like the first container's probe.
* Then ``service-port:<PORT_SERVICE>`` (unless a ``service-port:`` tag is
  already there) and ``instance:<pod>_<port>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hooks.consul.model import DEFAULT_DEREGISTER_CRITICAL_AFTER, Check, ServiceInstance
from hooks.errors import ConfigError, SourceError
from hooks.net import host_port

SERVICE_LABEL = "consul"
CONTAINER_LABEL = "consulContainer"
TAG_ANNOTATION_PREFIX = "CONSUL_TAG_"
SECURED = "-secured"
LBAAS_TAG_PREFIX = "lbaas:"
SERVICE_PORT_TAG = "service-port:"

#: Kubernetes' defaults for a probe's ``periodSeconds`` and ``timeoutSeconds``
DEFAULT_PERIOD = 10.0
DEFAULT_TIMEOUT = 1.0

# (new key, deprecated key) per tag; the new topology labels win when both exist.
_TOPOLOGY = (
    ("zone", "topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"),
    ("region", "topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region"),
)


# -- the pod this hook runs in -----------------------------------------------------------------


@dataclass(frozen=True)
class PodRef:
    """Which pod: from ``KUBERNETES_POD_NAMESPACE`` and ``KUBERNETES_POD_NAME``."""

    namespace: str
    name: str

    @property
    def key(self) -> str:
        """The state-file key of this pod's registrations (``<ns>_<pod>``)."""
        return f"{self.namespace}_{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def pod_ref(env: Mapping[str, str]) -> PodRef:
    """The pod named by the environment; :class:`ConfigError` naming a missing variable."""
    values = []
    for variable in ("KUBERNETES_POD_NAMESPACE", "KUBERNETES_POD_NAME"):
        value = env.get(variable, "").strip()
        if not value:
            raise ConfigError(
                f"{variable} is not set (pass it to the container with the downward API, "
                "fieldRef metadata.namespace / metadata.name)"
            )
        values.append(value)
    return PodRef(*values)


def service_name(pod: Mapping) -> str | None:
    """The pod's ``consul`` label, or ``None`` when the pod is not to be registered."""
    return _labels(pod).get(SERVICE_LABEL) or None


def pod_ip(pod: Mapping, env: Mapping[str, str]) -> str | None:
    """The address to register: ``KUBERNETES_POD_IP`` (downward API) first, else ``status.podIP``.

    The variable wins because the kubelet fills it in when the container is
    created, while the API often publishes ``status.podIP`` only after the first
    postStart hook has returned (kubernetes/kubernetes#85966).
    """
    return env.get("KUBERNETES_POD_IP", "").strip() or _get(pod, "status", "podIP") or None


def is_terminating(pod: Mapping) -> bool:
    """Whether the pod is being deleted (``metadata.deletionTimestamp`` is set)."""
    return bool(_get(pod, "metadata", "deletionTimestamp"))


def node_name(pod: Mapping) -> str | None:
    """The node the pod was scheduled on (``spec.nodeName``), for topology tags."""
    return _get(pod, "spec", "nodeName") or None


def wait_probe(pod: Mapping) -> tuple[Mapping, str, Mapping] | None:
    """The probe registration waits for: the first container's startupProbe, else readinessProbe.

    Returns ``(container, probe field name, probe)``, or ``None`` when there is
    nothing to wait for.
    """
    containers = _containers(pod)
    if not containers:
        return None
    for field in ("startupProbe", "readinessProbe"):
        probe = containers[0].get(field)
        if isinstance(probe, Mapping):
            return containers[0], field, probe
    return None


# -- PORT_DEFINITIONS --------------------------------------------------------------------------


@dataclass(frozen=True)
class PortDefinition:
    """One entry of ``PORT_DEFINITIONS``: ``{"port": N, "labels": {...}}``."""

    port: int
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    @property
    def is_service(self) -> bool:
        return self.label("service") == "true"

    @property
    def is_probe(self) -> bool:
        return self.label("probe") == "true"

    @property
    def consul_name(self) -> str | None:
        """The per-port service name (label ``consul``), if any."""
        return self.label(SERVICE_LABEL) or None

    @property
    def tags(self) -> list[str]:
        """Keys of the labels whose value is ``tag``, in the order they were written."""
        return [key for key, value in self.labels if value == "tag"]


def parse_port_definitions(raw: str) -> list[PortDefinition]:
    """Parse ``PORT_DEFINITIONS`` (JSON, possibly wrapped in single quotes).

    Raises :class:`ConfigError` naming the variable and what is wrong.
    """
    text = raw.strip().strip("'").strip()
    try:
        document = json.loads(text)
    except ValueError as exc:
        detail = getattr(exc, "msg", str(exc))
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise _bad(f"not valid JSON ({detail}{where})") from None
    if not isinstance(document, list):
        raise _bad(
            f'must be a JSON list of {{"port": N, "labels": {{...}}}}, got {_json_type(document)}'
        )
    if not document:
        raise _bad("the list is empty, so there is no port to register")
    return [_port_definition(index, entry) for index, entry in enumerate(document, 1)]


def _port_definition(index: int, entry: object) -> PortDefinition:
    if not isinstance(entry, dict):
        raise _bad(f"entry {index} is {_json_type(entry)}, not an object")
    if "port" not in entry:
        raise _bad(f'entry {index} has no "port"')
    port = _port_number(entry["port"])
    if port is None:
        raise _bad(f"entry {index}: port {json.dumps(entry['port'])} is not a port number")
    labels = entry.get("labels") or {}
    if not isinstance(labels, dict):
        raise _bad(f'entry {index} (port {port}): "labels" must be an object')
    for key, value in labels.items():
        if not isinstance(value, str):
            raise _bad(
                f'entry {index} (port {port}): label "{key}" must be a string, '
                f"got {json.dumps(value)}"
            )
    return PortDefinition(port, tuple(labels.items()))


def _port_number(value: object) -> int | None:
    # JSON numbers and digit strings both occur in hand-written definitions.
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and 0 < value < 65536:
        return value
    return None


def _bad(what: str) -> ConfigError:
    return ConfigError(f"PORT_DEFINITIONS: {what}")


def _json_type(value: object) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


# -- tags --------------------------------------------------------------------------------------


def topology_tags(node_labels: Mapping[str, str] | None) -> list[str]:
    """``zone:<z>`` and ``region:<r>`` from node labels (new keys first, old ones as fallback)."""
    labels = node_labels or {}
    tags = []
    for tag, new_key, old_key in _TOPOLOGY:
        value = labels.get(new_key) or labels.get(old_key)
        if value:
            tags.append(f"{tag}:{value}")
    return tags


def annotation_tags(annotations: Mapping[str, str] | None) -> list[str]:
    """Values of the ``CONSUL_TAG_*`` annotations, by key order; empty values are skipped.

    Annotations carry tags a label value cannot hold (``:``, ``/``, more than 63 chars).
    """
    items = sorted((annotations or {}).items())
    return [v for k, v in items if k.startswith(TAG_ANNOTATION_PREFIX) and isinstance(v, str) and v]


def global_tags(
    ref: PodRef, node_labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None
) -> list[str]:
    """The tags every service of the pod carries, in their fixed order."""
    return [
        f"k8sPodName: {ref.name}",
        f"k8sPodNamespace: {ref.namespace}",
        *topology_tags(node_labels),
        *annotation_tags(annotations),
    ]


def _finish_tags(
    base: Iterable[str], ref: PodRef, port: int, port_service: str | None
) -> tuple[str, ...]:
    tags = list(base)
    if port_service and not any(t.startswith(SERVICE_PORT_TAG) for t in tags):
        tags.append(f"{SERVICE_PORT_TAG}{port_service}")
    tags.append(f"instance:{ref.name}_{port}")
    # Keep the first of duplicates: Consul would show them twice.
    return tuple(dict.fromkeys(tags))


# -- checks ------------------------------------------------------------------------------------


def resolve_port(port: object, container: Mapping, what: str) -> int:
    """A probe's ``port`` (number, or name of one of ``container``'s ports) as a number."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str) and port.strip().isdigit():
        return int(port)
    if isinstance(port, str) and port:
        for declared in container.get("ports") or []:
            if declared.get("name") == port and declared.get("containerPort"):
                return int(declared["containerPort"])
    raise SourceError(
        f"{what}: port {json.dumps(port)} is not a number nor a named port of container "
        f'"{container.get("name", "")}"'
    )


def check_from_probe(
    probe: Mapping | None,
    container: Mapping,
    ip: str,
    deregister_critical_after: float = DEFAULT_DEREGISTER_CRITICAL_AFTER,
) -> Check | None:
    """The Consul check equivalent to a Kubernetes probe, or ``None`` (exec/grpc/no probe).

    HTTP GET → HTTP check on ``<ip>:<port><path>`` (HTTPS skips certificate
    verification, as the kubelet does); TCP → TCP check on ``<ip>:<port>``.
    Interval and timeout are the probe's ``periodSeconds`` and ``timeoutSeconds``.
    """
    if not probe:
        return None
    interval = probe_seconds(probe.get("periodSeconds"), DEFAULT_PERIOD)
    timeout = probe_seconds(probe.get("timeoutSeconds"), DEFAULT_TIMEOUT)
    what = f'probe of container "{container.get("name", "")}"'
    common = {"deregister_critical_after": deregister_critical_after}
    http = probe.get("httpGet")
    if isinstance(http, Mapping):
        port = resolve_port(http.get("port"), container, what)
        https = str(http.get("scheme") or "HTTP").upper() == "HTTPS"
        url = f"{'https' if https else 'http'}://{host_port(ip, port)}{http_path(http.get('path'))}"
        return Check.http(url, interval, timeout, tls_skip_verify=https, **common)
    tcp = probe.get("tcpSocket")
    if isinstance(tcp, Mapping):
        port = resolve_port(tcp.get("port"), container, what)
        return Check.tcp(host_port(ip, port), interval, timeout, **common)
    return None


def service_check_probe(container: Mapping) -> Mapping | None:
    """The probe a service's Consul check mirrors: readiness, else liveness."""
    for field in ("readinessProbe", "livenessProbe"):
        probe = container.get(field)
        if isinstance(probe, Mapping):
            return probe
    return None


def probe_seconds(value: object, default: float) -> float:
    """A probe's ``*Seconds`` field, or ``default`` when it is unset or not positive."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def http_path(path: object) -> str:
    """An httpGet probe's ``path``, ``/`` when empty."""
    # The API server defaults an empty path to "/"; be as forgiving for hand-made pods.
    text = path if isinstance(path, str) and path else "/"
    return text if text.startswith("/") else "/" + text


# -- services ----------------------------------------------------------------------------------


def services(
    pod: Mapping,
    env: Mapping[str, str],
    *,
    ip: str,
    node_labels: Mapping[str, str] | None = None,
    deregister_critical_after: float = DEFAULT_DEREGISTER_CRITICAL_AFTER,
) -> list[ServiceInstance]:
    """The services to register for ``pod`` at ``ip``; empty when the pod has no ``consul`` label.

    ``env`` supplies ``KUBERNETES_POD_NAMESPACE``/``_NAME``, ``PORT_DEFINITIONS``
    and ``PORT_SERVICE``; ``node_labels`` (``None`` when the node is unreadable)
    the topology tags. Raises :class:`ConfigError` for a bad ``PORT_DEFINITIONS``
    and :class:`SourceError` when the pod has no port to register.
    """
    name = service_name(pod)
    if name is None:
        return []
    ref = pod_ref(env)
    base = global_tags(ref, node_labels, _get(pod, "metadata", "annotations") or {})
    port_service = env.get("PORT_SERVICE", "").strip() or None
    raw_definitions = env.get("PORT_DEFINITIONS", "")
    if raw_definitions.strip():
        definitions = parse_port_definitions(raw_definitions)
        return _from_definitions(
            pod, ref, name, definitions, ip, base, port_service, deregister_critical_after
        )
    container = _service_container(pod, ref)
    port = int(container["ports"][0]["containerPort"])
    check = check_from_probe(
        service_check_probe(container), container, ip, deregister_critical_after
    )
    return [
        ServiceInstance(
            id=f"{ip}_{port}",
            name=name,
            address=ip,
            port=port,
            tags=_finish_tags(base, ref, port, port_service),
            check=check,
        )
    ]


def _from_definitions(
    pod: Mapping,
    ref: PodRef,
    pod_service: str,
    definitions: Sequence[PortDefinition],
    ip: str,
    base: Sequence[str],
    port_service: str | None,
    deregister_critical_after: float,
) -> list[ServiceInstance]:
    containers = _containers(pod)
    if not containers:
        raise SourceError(f"pod {ref} has no containers")
    check = check_from_probe(
        service_check_probe(containers[0]), containers[0], ip, deregister_critical_after
    )
    any_service = any(d.is_service for d in definitions)
    result: dict[str, ServiceInstance] = {}
    for index, definition in enumerate(definitions):
        # The original registers the first port when no port says service:"true",
        # even when that port is a probe port; every other port must ask for it.
        default_first = index == 0 and not any_service
        if not default_first and (
            definition.is_probe or not (definition.is_service or definition.consul_name)
        ):
            continue
        # A per-port name applies to that port only (the original leaked it onward).
        name = definition.consul_name or pod_service
        secured = SECURED in name
        service_id = f"{ip}_{definition.port}{SECURED if secured else ''}"
        if service_id in result:
            raise _bad(f"port {definition.port} is listed twice for service {name!r}")
        tags = [t for t in base if not (secured and t.startswith(LBAAS_TAG_PREFIX))]
        result[service_id] = ServiceInstance(
            id=service_id,
            name=name,
            address=ip,
            port=definition.port,
            tags=_finish_tags([*tags, *definition.tags], ref, definition.port, port_service),
            check=check,
        )
    return list(result.values())


def _service_container(pod: Mapping, ref: PodRef) -> Mapping:
    containers = _containers(pod)
    wanted = _labels(pod).get(CONTAINER_LABEL)
    if wanted:
        for container in containers:
            if container.get("name") == wanted:
                if not _has_port(container):
                    raise SourceError(
                        f'pod {ref}: container "{wanted}" (label {CONTAINER_LABEL}) '
                        "declares no containerPort to register"
                    )
                return container
        raise SourceError(
            f'pod {ref}: label {CONTAINER_LABEL} names container "{wanted}", '
            "which the pod does not have"
        )
    for container in containers:
        if _has_port(container):
            return container
    raise SourceError(f"pod {ref}: no container declares a containerPort to register")


def _has_port(container: Mapping) -> bool:
    ports = container.get("ports") or []
    return bool(ports) and isinstance(ports[0], Mapping) and bool(ports[0].get("containerPort"))


def stale_secured_ids(services: Sequence[ServiceInstance]) -> list[str]:
    """``<id>-secured`` for each id without its secured twin in ``services``.

    A previous instance at the same address may have registered a secured twin
    that this pod no longer has; left alone it would keep drawing traffic.
    """
    ids = {s.id for s in services}
    return [
        f"{s.id}{SECURED}"
        for s in services
        if not s.id.endswith(SECURED) and f"{s.id}{SECURED}" not in ids
    ]


# -- helpers -----------------------------------------------------------------------------------


def _get(document: Mapping, *path: str):
    value = document
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _labels(pod: Mapping) -> Mapping[str, str]:
    labels = _get(pod, "metadata", "labels")
    return labels if isinstance(labels, Mapping) else {}


def _containers(pod: Mapping) -> list[Mapping]:
    containers = _get(pod, "spec", "containers")
    return [c for c in containers if isinstance(c, Mapping)] if isinstance(containers, list) else []
