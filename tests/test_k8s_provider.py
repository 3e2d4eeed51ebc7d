"""The pure pod → services rules of ``hooks.k8s.provider``: fast, table-driven, no I/O."""

from __future__ import annotations

import json

import pytest

from hooks.consul.model import ServiceInstance
from hooks.errors import ConfigError, SourceError
from hooks.k8s import provider

IP = "10.2.3.4"
ENV = {"KUBERNETES_POD_NAMESPACE": "shop", "KUBERNETES_POD_NAME": "web-1"}
POD_TAGS = ["k8sPodName: web-1", "k8sPodNamespace: shop"]
HTTP_READY = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5, "timeoutSeconds": 2}


def container(name="app", ports=(8080,), **probes):
    return {
        "name": name,
        "ports": [{"containerPort": p, **({"name": n} if n else {})} for p, n in _ports(ports)],
        **probes,
    }


def _ports(ports):
    for port in ports:
        yield port if isinstance(port, tuple) else (port, None)


def pod(*containers, labels=None, annotations=None, **extra):
    meta = {"name": "web-1", "namespace": "shop", "labels": {"consul": "web", **(labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    return {
        "metadata": {**meta, **extra.pop("metadata", {})},
        "spec": {"containers": list(containers) or [container()], "nodeName": "node-a"},
        "status": {"podIP": IP},
        **extra,
    }


def build(the_pod, env=None, node_labels=None, **kw) -> list[ServiceInstance]:
    return provider.services(
        the_pod, {**ENV, **(env or {})}, ip=kw.pop("ip", IP), node_labels=node_labels, **kw
    )


def body(service: ServiceInstance) -> dict:
    return service.to_consul()


# -- the pod and its environment ---------------------------------------------------------------


@pytest.mark.parametrize("missing", ["KUBERNETES_POD_NAMESPACE", "KUBERNETES_POD_NAME"])
def test_pod_ref_names_the_missing_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        provider.pod_ref(env)


def test_pod_ref_and_state_key():
    ref = provider.pod_ref(ENV)
    assert (str(ref), ref.key) == ("shop/web-1", "shop_web-1")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [({"consul": "web"}, "web"), ({"consul": ""}, None), ({"app": "web"}, None), (None, None)],
)
def test_service_name_is_the_consul_label(labels, expected):
    assert provider.service_name({"metadata": {"labels": labels}}) == expected


def test_pod_without_label_registers_nothing():
    unlabelled = pod()
    del unlabelled["metadata"]["labels"]["consul"]
    assert build(unlabelled) == []


@pytest.mark.parametrize(
    ("env_ip", "status_ip", "expected"),
    [("10.9.9.9", IP, "10.9.9.9"), ("", IP, IP), ("10.9.9.9", None, "10.9.9.9"), ("", None, None)],
)
def test_pod_ip_prefers_the_downward_api_variable(env_ip, status_ip, expected):
    the_pod = {"status": {"podIP": status_ip} if status_ip else {}}
    assert provider.pod_ip(the_pod, {"KUBERNETES_POD_IP": env_ip}) == expected


def test_terminating_and_node_name():
    assert provider.is_terminating(pod(metadata={"deletionTimestamp": "2024-01-01T00:00:00Z"}))
    assert not provider.is_terminating(pod())
    assert provider.node_name(pod()) == "node-a"
    assert provider.node_name({"spec": {}}) is None


# -- a single service (no PORT_DEFINITIONS) ----------------------------------------------------


def test_single_container_with_readiness_http_probe():
    [service] = build(pod(container(readinessProbe=HTTP_READY)))
    assert body(service) == {
        "ID": f"{IP}_8080",
        "Name": "web",
        "Tags": [*POD_TAGS, "instance:web-1_8080"],
        "Address": IP,
        "Port": 8080,
        "Check": {
            "CheckID": f"service:{IP}_8080",
            "HTTP": f"http://{IP}:8080/ready",
            "Method": "GET",
            "Interval": "5s",
            "Timeout": "2s",
            "DeregisterCriticalServiceAfter": "15m",
        },
    }


@pytest.mark.parametrize(
    ("probes", "expected_check"),
    [
        # liveness is the fallback when there is no readiness probe
        (
            {"livenessProbe": {"httpGet": {"path": "/alive", "port": 8080}}},
            {
                "HTTP": f"http://{IP}:8080/alive",
                "Method": "GET",
                "Interval": "10s",
                "Timeout": "1s",
            },
        ),
        # readiness wins over liveness
        (
            {"livenessProbe": {"tcpSocket": {"port": 8080}}, "readinessProbe": HTTP_READY},
            {"HTTP": f"http://{IP}:8080/ready", "Method": "GET", "Interval": "5s", "Timeout": "2s"},
        ),
        (
            {"readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 3}},
            {"TCP": f"{IP}:8080", "Interval": "3s", "Timeout": "1s"},
        ),
        # named port, HTTPS (not verified, like the kubelet), no path
        (
            {"readinessProbe": {"httpGet": {"port": "admin", "scheme": "HTTPS"}}},
            {
                "HTTP": f"https://{IP}:9090/",
                "Method": "GET",
                "TLSSkipVerify": True,
                "Interval": "10s",
                "Timeout": "1s",
            },
        ),
        ({"readinessProbe": {"exec": {"command": ["true"]}}}, None),
        ({"readinessProbe": {"grpc": {"port": 8080}}}, None),
        ({}, None),
    ],
    ids=["liveness", "readiness-first", "tcp", "https-named", "exec", "grpc", "none"],
)
def test_check_mirrors_the_probe(probes, expected_check):
    [service] = build(pod(container(ports=(8080, (9090, "admin")), **probes)))
    check = body(service).get("Check")
    if expected_check is None:
        assert check is None
    else:
        assert check == {
            "CheckID": f"service:{IP}_8080",
            **expected_check,
            "DeregisterCriticalServiceAfter": "15m",
        }


def test_deregister_critical_after_comes_from_the_config():
    [service] = build(pod(container(readinessProbe=HTTP_READY)), deregister_critical_after=120)
    assert body(service)["Check"]["DeregisterCriticalServiceAfter"] == "2m"


def test_unknown_named_probe_port_is_one_line():
    the_pod = pod(container(readinessProbe={"httpGet": {"port": "nope"}}))
    with pytest.raises(SourceError, match='port "nope" is not a number nor a named port'):
        build(the_pod)


def test_ipv6_pod_ip_is_bracketed_in_the_check():
    [service] = build(pod(container(readinessProbe=HTTP_READY)), ip="fd00::5")
    assert (service.id, service.check.target) == ("fd00::5_8080", "http://[fd00::5]:8080/ready")


@pytest.mark.parametrize(
    ("containers", "labels", "expected"),
    [
        # the first container with ports, and its first port
        ([container("init", ports=()), container("app", ports=(7000, 7001))], {}, 7000),
        ([container("a", ports=(7000,)), container("b", ports=(8000,))], {}, 7000),
        (
            [container("a", ports=(7000,)), container("b", ports=(8000,))],
            {"consulContainer": "b"},
            8000,
        ),
    ],
)
def test_which_container_and_port(containers, labels, expected):
    [service] = build(pod(*containers, labels=labels))
    assert (service.port, service.id) == (expected, f"{IP}_{expected}")


def test_consul_container_label_uses_that_containers_probe():
    a = container("a", ports=(7000,), readinessProbe={"tcpSocket": {"port": 7000}})
    b = container("b", ports=(8000,), readinessProbe={"httpGet": {"path": "/b", "port": 8000}})
    [service] = build(pod(a, b, labels={"consulContainer": "b"}))
    assert service.check.target == f"http://{IP}:8000/b"


@pytest.mark.parametrize(
    ("containers", "labels", "message"),
    [
        ([container(ports=())], {}, "no container declares a containerPort"),
        ([container("a")], {"consulContainer": "zz"}, 'names container "zz"'),
        ([container("a", ports=())], {"consulContainer": "a"}, 'container "a" (label'),
    ],
)
def test_nothing_to_register_on_a_labelled_pod_is_a_source_error(containers, labels, message):
    with pytest.raises(SourceError, match=message.replace("(", r"\(")):
        build(pod(*containers, labels=labels))


# -- tags --------------------------------------------------------------------------------------

OLD_ZONE = "failure-domain.beta.kubernetes.io/zone"
OLD_REGION = "failure-domain.beta.kubernetes.io/region"
NEW_ZONE = "topology.kubernetes.io/zone"
NEW_REGION = "topology.kubernetes.io/region"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({OLD_ZONE: "a", OLD_REGION: "eu"}, ["zone:a", "region:eu"]),
        ({NEW_ZONE: "b", NEW_REGION: "us"}, ["zone:b", "region:us"]),
        ({OLD_ZONE: "a", NEW_ZONE: "b", OLD_REGION: "eu"}, ["zone:b", "region:eu"]),
        ({NEW_ZONE: ""}, []),
        ({"kubernetes.io/hostname": "n1"}, []),
        (None, []),
    ],
    ids=["old", "new", "both-new-wins", "empty", "unrelated", "node-unreadable"],
)
def test_topology_tags(labels, expected):
    assert provider.topology_tags(labels) == expected


def test_annotation_tags_are_sorted_by_key_and_skip_empty_values():
    annotations = {
        "CONSUL_TAG_2": "second",
        "CONSUL_TAG_1": "first",
        "CONSUL_TAG_3": "",
        "other": "ignored",
        "consul_tag_x": "case matters",
    }
    assert provider.annotation_tags(annotations) == ["first", "second"]


def test_tag_order_global_then_service_port_then_instance():
    the_pod = pod(annotations={"CONSUL_TAG_b": "lbaas:pool", "CONSUL_TAG_a": "team:x"})
    [service] = build(the_pod, env={"PORT_SERVICE": "31000"}, node_labels={NEW_ZONE: "z1"})
    assert list(service.tags) == [
        *POD_TAGS,
        "zone:z1",
        "team:x",
        "lbaas:pool",
        "service-port:31000",
        "instance:web-1_8080",
    ]


def test_service_port_tag_is_not_added_twice():
    the_pod = pod(annotations={"CONSUL_TAG_1": "service-port:1"})
    [service] = build(the_pod, env={"PORT_SERVICE": "2"})
    assert [t for t in service.tags if t.startswith("service-port:")] == ["service-port:1"]


# -- PORT_DEFINITIONS --------------------------------------------------------------------------


def definitions(*entries) -> str:
    return json.dumps([{"port": p, "labels": labels} for p, labels in entries])


def registered(port_definitions, **kw):
    """(id, name, port tags) of each service, the global tags left out for readability."""
    the_pod = kw.pop("pod", None) or pod(annotations={"CONSUL_TAG_x": "lbaas:x"})
    result = []
    for s in build(the_pod, env={"PORT_DEFINITIONS": port_definitions, **kw}):
        local = [t for t in s.tags if t not in POD_TAGS]
        result.append((s.id, s.name, s.port, local))
    return result


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        pytest.param(
            [(31000, {"service": "true", "envoy": "tag"}), (31001, {"probe": "true"})],
            [(f"{IP}_31000", "web", 31000, ["lbaas:x", "envoy", "instance:web-1_31000"])],
            id="service-true-and-probe",
        ),
        pytest.param(
            [(31000, {"envoy": "tag"}), (31001, {})],
            [(f"{IP}_31000", "web", 31000, ["lbaas:x", "envoy", "instance:web-1_31000"])],
            id="first-port-when-no-service-label",
        ),
        pytest.param(
            [(31001, {"probe": "true"}), (31000, {})],
            [(f"{IP}_31001", "web", 31001, ["lbaas:x", "instance:web-1_31001"])],
            id="first-port-even-if-probe",
        ),
        pytest.param(
            [(31001, {"probe": "true"}), (31000, {"service": "true"})],
            [(f"{IP}_31000", "web", 31000, ["lbaas:x", "instance:web-1_31000"])],
            id="probe-port-skipped-when-a-service-is-labelled",
        ),
        pytest.param(
            [
                (31000, {"service": "true"}),
                (31002, {"consul": "web-admin", "admin": "tag"}),
                (31003, {"service": "true"}),
            ],
            [
                (f"{IP}_31000", "web", 31000, ["lbaas:x", "instance:web-1_31000"]),
                (f"{IP}_31002", "web-admin", 31002, ["lbaas:x", "admin", "instance:web-1_31002"]),
                # the per-port name does not leak to later ports (the original's bug)
                (f"{IP}_31003", "web", 31003, ["lbaas:x", "instance:web-1_31003"]),
            ],
            id="consul-name-per-port-only",
        ),
        pytest.param(
            [
                (31000, {"service": "true"}),
                (31002, {"consul": "web-secured", "secureConnection:true": "tag"}),
            ],
            [
                (f"{IP}_31000", "web", 31000, ["lbaas:x", "instance:web-1_31000"]),
                (
                    f"{IP}_31002-secured",
                    "web-secured",
                    31002,
                    ["secureConnection:true", "instance:web-1_31002"],
                ),
            ],
            id="secured-id-and-no-lbaas",
        ),
        pytest.param(
            [(31000, {"probe": "true", "consul": "x"}), (31001, {"service": "true"})],
            [(f"{IP}_31001", "web", 31001, ["lbaas:x", "instance:web-1_31001"])],
            id="probe-wins-over-consul-label",
        ),
    ],
)
def test_port_definitions(entries, expected):
    assert registered(definitions(*entries)) == expected


def test_port_definitions_in_single_quotes_and_service_port():
    raw = (
        "'" + definitions((31000, {"service": "true"}), (31003, {"consul": "x", "a": "tag"})) + "'"
    )
    assert registered(raw, PORT_SERVICE="31000") == [
        (f"{IP}_31000", "web", 31000, ["lbaas:x", "service-port:31000", "instance:web-1_31000"]),
        (f"{IP}_31003", "x", 31003, ["lbaas:x", "a", "service-port:31000", "instance:web-1_31003"]),
    ]


def test_port_label_service_port_tag_wins_over_port_service():
    raw = definitions((31010, {"service": "true", "service-port:31010": "tag"}))
    [(_, _, _, tags)] = registered(raw, PORT_SERVICE="9")
    assert tags == ["lbaas:x", "service-port:31010", "instance:web-1_31010"]


def test_every_port_definition_service_uses_the_first_containers_probe():
    first = container("first", readinessProbe={"tcpSocket": {"port": 8080}})
    second = container("second", ports=(9000,), readinessProbe=HTTP_READY)
    raw = definitions((31000, {"service": "true"}), (31001, {"consul": "b"}))
    services = build(pod(first, second), env={"PORT_DEFINITIONS": raw})
    assert [s.check.target for s in services] == [f"{IP}:8080", f"{IP}:8080"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[{", "PORT_DEFINITIONS: not valid JSON"),
        ('{"port": 1}', "PORT_DEFINITIONS: must be a JSON list"),
        ("[]", "PORT_DEFINITIONS: the list is empty"),
        ("[1]", "PORT_DEFINITIONS: entry 1 is a number, not an object"),
        ('[{"labels": {}}]', 'PORT_DEFINITIONS: entry 1 has no "port"'),
        ('[{"port": 1}, {"port": "http"}]', 'entry 2: port "http" is not a port number'),
        ('[{"port": 70000}]', "entry 1: port 70000 is not a port number"),
        ('[{"port": 1, "labels": ["a"]}]', '"labels" must be an object'),
        ('[{"port": 1, "labels": {"service": true}}]', 'label "service" must be a string'),
        ('[{"port": 1}, {"port": 1, "labels": {"consul": "web"}}]', "port 1 is listed twice"),
    ],
)
def test_malformed_port_definitions_is_one_config_error(raw, message):
    with pytest.raises(ConfigError) as caught:
        build(pod(), env={"PORT_DEFINITIONS": raw})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_numeric_string_ports_are_accepted():
    assert [d.port for d in provider.parse_port_definitions('[{"port": "31000"}]')] == [31000]


# -- secured twins and the probe to wait for ---------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "stale"),
    [
        (["a"], ["a-secured"]),
        (["a", "a-secured"], []),
        (["a", "b-secured"], ["a-secured"]),
        (["b-secured"], []),
    ],
)
def test_stale_secured_ids(ids, stale):
    services = [ServiceInstance(i, "s", IP, 1) for i in ids]
    assert provider.stale_secured_ids(services) == stale


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        ({"startupProbe": {"exec": {}}, "readinessProbe": HTTP_READY}, "startupProbe"),
        ({"readinessProbe": HTTP_READY, "livenessProbe": {"exec": {}}}, "readinessProbe"),
        ({"livenessProbe": HTTP_READY}, None),
    ],
)
def test_wait_probe_is_startup_else_readiness_of_the_first_container(probes, expected):
    first = container("first", **probes)
    second = container("second", readinessProbe=HTTP_READY)
    found = provider.wait_probe(pod(first, second))
    assert (found[1] if found else None) == expected
    if found:
        assert found[0]["name"] == "first"
