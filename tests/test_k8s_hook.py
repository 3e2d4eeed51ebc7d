"""``register k8s`` / ``deregister k8s`` end to end: the CLI as a subprocess, both doubles.

Every test runs ``python -m hooks`` with an explicit environment against the
Kubernetes API double (HTTPS, its own CA) and the Consul double, then checks
what Consul received, the exit code and the one-line error. Pods use podIP
127.0.0.1 so that probes reach a small local server standing in for the app.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import yaml

from tests.doubles.consul import ConsulDouble
from tests.doubles.kube import KubeDouble

NS, POD = "shop", "web-1"
IP = "127.0.0.1"
POD_TAGS = [f"k8sPodName: {POD}", f"k8sPodNamespace: {NS}"]
GET_POD_TIMEOUT = 1.0


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def kube():
    with KubeDouble() as double:
        double.add_node({"metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"}}})
        yield double


@pytest.fixture
def consul():
    with ConsulDouble() as double:
        yield double


@pytest.fixture
def env(kube, consul, tmp_path):
    """The container's environment: pod identity, kubeconfig for the double, short timeouts."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path),
        "CONSUL_HTTP_ADDR": consul.addr,
        "CONSUL_CATALOG_WAIT": "1s",
        "CONSUL_RETRY_DEADLINE": "2s",
        "CONSUL_HOOK_STATE_DIR": str(tmp_path / "state"),
        "KUBERNETES_POD_NAMESPACE": NS,
        "KUBERNETES_POD_NAME": POD,
        "KUBERNETES_GET_POD_TIMEOUT": f"{GET_POD_TIMEOUT:g}s",
        "KUBERNETES_HEALTH_CHECK_TIMEOUT": "5s",
        **kube.kubeconfig_env(tmp_path / "kube"),
    }


def hook(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the CLI from this interpreter, as the postStart/preStop hook would."""
    return subprocess.run(
        [sys.executable, "-m", "hooks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def register(env, *args):
    return hook(*args, "register", "k8s", env=env)


def deregister(env, *args):
    return hook(*args, "deregister", "k8s", env=env)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one error line of a failed run (after ``error: ``); fails on tracebacks or more."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, result.stderr
    return errors[0].split("error: ", 1)[1]


def container(name="app", ports=(8080,), **probes):
    return {"name": name, "ports": [{"containerPort": p} for p in ports], **probes}


def make_pod(*containers, labels=None, annotations=None, ip=IP, node="node-a", **metadata):
    meta = {"name": POD, "namespace": NS, "labels": {"consul": "web", **(labels or {})}}
    meta.update(metadata)
    if annotations:
        meta["annotations"] = annotations
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": node, "containers": list(containers) or [container()]},
        "status": {"phase": "Pending", **({"podIP": ip} if ip else {})},
    }


def http_check(url, interval="10s", timeout="1s", sid=f"{IP}_8080"):
    return {
        "CheckID": f"service:{sid}",
        "HTTP": url,
        "Method": "GET",
        "Interval": interval,
        "Timeout": timeout,
        "DeregisterCriticalServiceAfter": "15m",
    }


def consul_put(consul: ConsulDouble, path: str, body: dict) -> None:
    request = urllib.request.Request(
        consul.url + path, data=json.dumps(body).encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def request_index(consul: ConsulDouble, method: str, path_part: str, *, last=False) -> int:
    """Where the first (or last) matching request is in the order Consul received them."""
    found = [
        i for i, r in enumerate(list(consul.requests)) if r.method == method and path_part in r.path
    ]
    return found[-1] if last else found[0]


class ProbeTarget:
    """The application a probe checks: 503 for the first ``failures`` requests, then 200."""

    def __init__(self, failures: int = 0, *, tls: bool = False, on_request=None) -> None:
        self.failures = failures
        self.on_request = on_request
        self.seen: list[tuple[float, str, dict[str, str], int]] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    code = 503 if len(target.seen) < target.failures else 200
                    target.seen.append((time.monotonic(), self.path, dict(self.headers), code))
                if target.on_request:
                    target.on_request(len(target.seen))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        lock = threading.Lock()
        self.server = ThreadingHTTPServer((IP, 0), Handler)
        self.server.daemon_threads = True
        if tls:
            # Self-signed as far as the hook knows: it must not verify, like the kubelet.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            trustme.CA().issue_cert(IP).configure_cert(context)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def hook_probes(self):
        """Requests the hook made (the Consul double's own checks send another agent)."""
        return [s for s in self.seen if "kube-probe" in s[2].get("User-Agent", "")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    targets = []

    def start(failures=0, **kw):
        targets.append(ProbeTarget(failures, **kw))
        return targets[-1]

    yield start
    for target in targets:
        target.close()


# -- what gets registered ----------------------------------------------------------------------


def test_pod_without_consul_label_registers_nothing(kube, consul, env):
    pod = make_pod()
    del pod["metadata"]["labels"]["consul"]
    kube.add_pod(pod, pod_ip_after=lambda: False)  # no IP: nothing must wait for one
    result = ok(register(env))
    assert "nothing to register" in result.stderr
    ok(deregister(env))
    assert consul.requests == []


def test_register_and_deregister_single_container(kube, consul, env, tmp_path):
    ready = {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5, "timeoutSeconds": 2}
    app = container(
        readinessProbe=ready,
        livenessProbe={"tcpSocket": {"port": 8080}},  # only the fallback for the check
        startupProbe={"exec": {"command": ["true"]}},  # what registration waits for
    )
    kube.add_pod(make_pod(app))
    ok(register(env))
    assert consul.registrations() == [
        {
            "ID": f"{IP}_8080",
            "Name": "web",
            "Tags": [*POD_TAGS, "instance:web-1_8080"],
            "Address": IP,
            "Port": 8080,
            "Check": http_check(f"http://{IP}:8080/ready", "5s", "2s"),
        }
    ]
    assert all(r.header("Authorization") == "Bearer test-token" for r in kube.requests)
    state = tmp_path / "state" / f"{NS}_{POD}.json"
    assert json.loads(state.read_text()) == [{"id": f"{IP}_8080", "name": "web"}]

    ok(deregister(env))
    assert consul.services() == {}
    assert [sid for _, sid in consul.deregistrations()][-1] == f"{IP}_8080"
    assert not state.exists()


def tcp_check(address, interval="10s", timeout="1s", sid=f"{IP}_8080"):
    return {
        "CheckID": f"service:{sid}",
        "TCP": address,
        "Interval": interval,
        "Timeout": timeout,
        "DeregisterCriticalServiceAfter": "15m",
    }


@pytest.mark.parametrize(
    ("probes", "check"),
    [
        pytest.param(
            lambda port: {"livenessProbe": {"httpGet": {"path": "/alive", "port": port}}},
            lambda port: http_check(f"http://{IP}:{port}/alive", sid=f"{IP}_{port}"),
            id="liveness-fallback",
        ),
        pytest.param(
            lambda port: {"readinessProbe": {"tcpSocket": {"port": port}, "timeoutSeconds": 3}},
            lambda port: tcp_check(f"{IP}:{port}", timeout="3s", sid=f"{IP}_{port}"),
            id="tcp",
        ),
        pytest.param(
            lambda port: {"livenessProbe": {"exec": {"command": ["true"]}}},
            lambda port: None,
            id="exec-no-check",
        ),
    ],
)
def test_check_from_the_containers_probe(kube, consul, env, app, probes, check):
    port = app().port  # the readiness probe is waited for, so something must listen
    kube.add_pod(make_pod(container(ports=(port,), **probes(port))))
    ok(register(env))
    [body] = consul.registrations()
    assert body.get("Check") == check(port)


def test_consul_container_label_picks_the_container(kube, consul, env):
    sidecar = container("sidecar", ports=(15000,))
    main = container("main", ports=(9000, 9001), readinessProbe={"tcpSocket": {"port": 9001}})
    kube.add_pod(make_pod(sidecar, main, labels={"consulContainer": "main"}))
    ok(register({**env, "PORT_SERVICE": "9000"}))
    [body] = consul.registrations()
    assert (body["ID"], body["Port"], body["Check"]["TCP"]) == (f"{IP}_9000", 9000, f"{IP}:9001")
    assert body["Tags"] == [*POD_TAGS, "service-port:9000", "instance:web-1_9000"]


def test_tags_topology_new_keys_win_and_annotations_sorted(kube, consul, env):
    kube.add_node(
        {
            "metadata": {
                "name": "node-a",
                "labels": {
                    "failure-domain.beta.kubernetes.io/zone": "old-zone",
                    "failure-domain.beta.kubernetes.io/region": "eu",
                    "topology.kubernetes.io/zone": "eu-1a",
                    "kubernetes.io/hostname": "node-a",
                },
            }
        }
    )
    annotations = {"CONSUL_TAG_b": "lbaas:pool", "CONSUL_TAG_a": "team:core", "CONSUL_TAG_c": ""}
    kube.add_pod(make_pod(annotations=annotations))
    ok(register(env))
    [body] = consul.registrations()
    assert body["Tags"] == [
        *POD_TAGS,
        "zone:eu-1a",
        "region:eu",
        "team:core",
        "lbaas:pool",
        "instance:web-1_8080",
    ]


def test_unreadable_node_registers_without_topology_tags(kube, consul, env):
    kube.add_node({"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "z"}}})
    kube.set_forbidden("nodes")
    kube.add_pod(make_pod())
    result = ok(register(env))
    assert 'nodes "node-a" is forbidden' in result.stderr and "WARNING" in result.stderr
    [body] = consul.registrations()
    assert body["Tags"] == [*POD_TAGS, "instance:web-1_8080"]


PORT_DEFINITIONS = [
    {"port": 31000, "labels": {"service": "true", "envoy": "tag"}},
    {"port": 31001, "labels": {"probe": "true"}},
    {"port": 31002, "labels": {"consul": "web-secured", "secureConnection:true": "tag"}},
    {"port": 31003, "labels": {"consul": "web-frontend", "frontend:web": "tag"}},
    {"port": 31004, "labels": {"service": "true"}},
]


def test_port_definitions_register_every_selected_port(kube, consul, env, app):
    port = app().port
    ready = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 3}
    first = container("app", ports=(port,), readinessProbe=ready)
    first["ports"][0]["name"] = "http"
    kube.add_pod(make_pod(first, annotations={"CONSUL_TAG_1": "lbaas:web"}))
    quoted = "'" + json.dumps(PORT_DEFINITIONS) + "'"
    ok(register({**env, "PORT_DEFINITIONS": quoted, "PORT_SERVICE": "31000"}))

    def expected(number, name, tags, suffix=""):
        sid = f"{IP}_{number}{suffix}"
        return {
            "ID": sid,
            "Name": name,
            "Tags": [*tags, "service-port:31000", f"instance:web-1_{number}"],
            "Address": IP,
            "Port": number,
            "Check": http_check(f"http://{IP}:{port}/health", "3s", sid=sid),
        }

    lbaas = [*POD_TAGS, "lbaas:web"]
    assert consul.registrations() == [
        expected(31000, "web", [*lbaas, "envoy"]),
        expected(31002, "web-secured", [*POD_TAGS, "secureConnection:true"], "-secured"),
        expected(31003, "web-frontend", [*lbaas, "frontend:web"]),
        expected(31004, "web", lbaas),  # the per-port name of 31003 does not leak here
    ]


@pytest.mark.parametrize(
    ("definitions", "ids"),
    [
        pytest.param([{"port": 31000}, {"port": 31001}], ["31000"], id="first-port-by-default"),
        pytest.param(
            [{"port": 31000, "labels": {"probe": "true"}}, {"port": 31001}],
            ["31000"],
            id="first-port-even-if-probe",
        ),
        pytest.param(
            [
                {"port": 31000, "labels": {"probe": "true"}},
                {"port": 31001, "labels": {"service": "true"}},
            ],
            ["31001"],
            id="probe-port-skipped",
        ),
    ],
)
def test_port_definitions_first_port_rule(kube, consul, env, definitions, ids):
    kube.add_pod(make_pod())
    ok(register({**env, "PORT_DEFINITIONS": json.dumps(definitions)}))
    assert [b["ID"] for b in consul.registrations()] == [f"{IP}_{i}" for i in ids]


def test_stale_secured_twin_is_deregistered_before_registering(kube, consul, env):
    consul_put(
        consul,
        "/v1/agent/service/register",
        {"ID": f"{IP}_31000-secured", "Name": "web-secured", "Address": IP, "Port": 31000},
    )
    kube.add_pod(make_pod())
    definitions = [{"port": 31000, "labels": {"service": "true"}}]
    ok(register({**env, "PORT_DEFINITIONS": json.dumps(definitions)}))
    assert list(consul.services()) == [f"{IP}_31000"]
    assert request_index(consul, "PUT", "/deregister/127.0.0.1_31000-secured") < request_index(
        consul, "PUT", "/service/register", last=True
    )


def test_malformed_port_definitions_is_one_line_and_registers_nothing(kube, consul, env):
    kube.add_pod(make_pod())
    result = register({**env, "PORT_DEFINITIONS": '[{"port": "http"}]'})
    assert error_line(result) == 'PORT_DEFINITIONS: entry 1: port "http" is not a port number'
    assert result.returncode == 2
    assert consul.requests == [] and kube.requests == []


# -- waiting for the pod and its probe ---------------------------------------------------------


def test_waits_for_the_readiness_probe_before_registering(kube, consul, env, app):
    target = app(failures=2)
    probe = {
        "httpGet": {
            "path": "/ready",
            "port": target.port,
            "httpHeaders": [{"name": "X-A", "value": "1"}],
        },
        "periodSeconds": 0.1,
    }
    kube.add_pod(make_pod(container(ports=(target.port,), readinessProbe=probe)))
    ok(register(env))
    probes = target.hook_probes()
    assert [code for *_, code in probes][:3] == [503, 503, 200]
    assert probes[0][1] == "/ready" and probes[0][2]["X-A"] == "1"
    passed_at = probes[2][0]
    registered_at = consul.requests[request_index(consul, "PUT", "/service/register")].time
    assert registered_at > passed_at


def test_https_probe_with_a_self_signed_certificate(kube, consul, env, app):
    target = app(failures=1, tls=True)
    probe = {"httpGet": {"port": target.port, "scheme": "HTTPS"}, "periodSeconds": 0.1}
    kube.add_pod(make_pod(container(ports=(target.port,), startupProbe=probe)))
    ok(register(env))
    assert [code for *_, code in target.hook_probes()][:2] == [503, 200]
    assert consul.registrations()[0]["ID"] == f"{IP}_{target.port}"


def test_exec_probe_runs_the_command_until_it_exits_0(kube, consul, env, tmp_path):
    counter = tmp_path / "runs"
    script = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); "
        "sys.exit(0 if n >= 3 else 1)"
    )
    probe = {
        "exec": {"command": [sys.executable, "-c", script, str(counter)]},
        "periodSeconds": 0.1,
    }
    kube.add_pod(make_pod(container(readinessProbe=probe)))
    ok(register(env))
    assert counter.read_text() == "3"
    assert len(consul.registrations()) == 1


def test_probe_that_never_passes_fails_within_the_timeout(kube, consul, env, app):
    target = app(failures=10**6)
    probe = {"httpGet": {"path": "/ready", "port": target.port}, "periodSeconds": 0.2}
    kube.add_pod(make_pod(container(ports=(target.port,), readinessProbe=probe)))
    started = time.monotonic()
    result = register({**env, "KUBERNETES_HEALTH_CHECK_TIMEOUT": "1s"})
    assert time.monotonic() - started < 5
    assert error_line(result) == (
        'readinessProbe of container "app" did not pass within 1s; last attempt: '
        f"GET http://{IP}:{target.port}/ready answered HTTP 503"
    )
    assert consul.registrations() == []


def test_health_check_timeout_0_registers_without_waiting(kube, consul, env):
    probe = {"exec": {"command": ["false"]}}
    kube.add_pod(make_pod(container(startupProbe=probe)))
    ok(register({**env, "KUBERNETES_HEALTH_CHECK_TIMEOUT": "0"}))
    assert len(consul.registrations()) == 1


def test_pod_deleted_while_waiting_is_not_registered(kube, consul, env, app):
    def start_deleting(count):
        if count == 1:
            terminating = make_pod(deletionTimestamp="2024-05-01T10:00:00Z")
            terminating["spec"]["containers"][0] = pod["spec"]["containers"][0]
            kube.set_pod(NS, POD, terminating)

    target = app(failures=1, on_request=start_deleting)
    probe = {"httpGet": {"port": target.port}, "periodSeconds": 0.1}
    pod = make_pod(container(ports=(target.port,), readinessProbe=probe))
    kube.add_pod(pod)
    result = ok(register(env))
    assert "being deleted" in result.stderr
    assert consul.registrations() == []


def test_pod_ip_from_the_downward_api_when_the_api_has_none(kube, consul, env):
    kube.add_pod(make_pod(), pod_ip_after=lambda: False)  # kubernetes#85966
    started = time.monotonic()
    ok(register({**env, "KUBERNETES_POD_IP": "10.20.30.40"}))
    assert time.monotonic() - started < GET_POD_TIMEOUT + 2
    [body] = consul.registrations()
    assert (body["ID"], body["Address"]) == ("10.20.30.40_8080", "10.20.30.40")


def test_waits_for_the_api_to_publish_the_pod_ip(kube, consul, env):
    kube.add_pod(make_pod(), pod_ip_after=0.6)
    ok(register({**env, "KUBERNETES_GET_POD_TIMEOUT": "5s"}))
    assert len(kube.pod_requests()) >= 2
    assert consul.registrations()[0]["ID"] == f"{IP}_8080"


def test_pod_that_never_gets_an_ip_is_a_clear_error(kube, consul, env):
    kube.add_pod(make_pod(), pod_ip_after=lambda: False)
    started = time.monotonic()
    result = register(env)
    assert time.monotonic() - started < GET_POD_TIMEOUT + 3
    assert error_line(result) == f"pod {NS}/{POD} has no IP after 1s"
    assert consul.requests == []


# -- the Kubernetes API failing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("missing", f'Kubernetes API: pods "{POD}" not found (NotFound)'),
        (
            "forbidden",
            f'Kubernetes API: pods "{POD}" is forbidden: User "system:serviceaccount:default:'
            f'consul-hook" cannot get resource "pods" in API group "" in the namespace "{NS}" '
            "(Forbidden)",
        ),
        ("bad-token", "Kubernetes API: Unauthorized (Unauthorized)"),
        ("garbage", "answered 200 with a body that is not a JSON object (text/html)"),
    ],
)
def test_api_errors_are_one_line(kube, consul, env, tmp_path, fault, message):
    if fault != "missing":
        kube.add_pod(make_pod())
    if fault == "forbidden":
        kube.set_forbidden("pods")
    if fault == "garbage":
        kube.set_garbage()
    if fault == "bad-token":
        env["KUBECONFIG"] = str(kube.write_kubeconfig(tmp_path / "bad", token="expired"))
    result = register(env)
    assert message in error_line(result)
    assert result.returncode == 1
    assert consul.requests == []


def test_api_down_is_one_line_after_the_timeout(kube, consul, env):
    kube.stop()
    result = register(env)
    assert error_line(result) == (
        f"cannot read pod {NS}/{POD} within 1s: Kubernetes API at {kube.url} unreachable "
        "(connection refused)"
    )


def test_untrusted_api_certificate_is_refused(kube, consul, env, tmp_path):
    config = json.loads(Path(env["KUBECONFIG"]).read_text())
    del config["clusters"][0]["cluster"]["certificate-authority"]
    Path(env["KUBECONFIG"]).write_text(json.dumps(config))
    kube.add_pod(make_pod())
    assert "TLS handshake failed: certificate verify failed" in error_line(register(env))


def test_no_kubeconfig_and_not_in_a_cluster(kube, consul, env):
    del env["KUBECONFIG"]
    result = register(env)
    assert error_line(result).startswith("no access to the Kubernetes API: not in a cluster")
    assert "set KUBECONFIG" in result.stderr and result.returncode == 2


def test_missing_pod_name_is_named(env):
    del env["KUBERNETES_POD_NAME"]
    assert error_line(register(env)).startswith("KUBERNETES_POD_NAME is not set")


def write_yaml(path: Path, document: dict) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document))
    return str(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kubeconfig_list_merges_and_resolves_relative_paths(kube, consul, env, tmp_path):
    # The first file that sets a key wins; paths are relative to the file that holds them.
    first = write_yaml(
        tmp_path / "a" / "config",
        {
            "current-context": "hook",
            "contexts": [{"name": "hook", "context": {"cluster": "double", "user": "hook"}}],
            "users": [{"name": "hook", "user": {"tokenFile": "token"}}],
        },
    )
    (tmp_path / "a" / "token").write_text(kube.token + "\n")
    (tmp_path / "b").mkdir()
    shutil.copyfile(kube.ca_pem_path, tmp_path / "b" / "ca.pem")
    second = write_yaml(
        tmp_path / "b" / "config",
        {
            "current-context": "other",
            "clusters": [
                {
                    "name": "double",
                    "cluster": {"server": kube.url, "certificate-authority": "ca.pem"},
                }
            ],
            "users": [{"name": "hook", "user": {"token": "not-this-one"}}],
        },
    )
    env["KUBECONFIG"] = f"{tmp_path / 'missing'}:{first}:{second}"
    kube.add_pod(make_pod())
    ok(register(env))
    assert kube.requests[0].header("Authorization") == f"Bearer {kube.token}"


def test_kubeconfig_inline_data_and_client_certificate(kube, consul, env, tmp_path):
    cert, key = kube.issue_client_cert("hook-user")
    cluster = {
        "server": kube.url,
        "certificate-authority-data": b64(Path(kube.ca_pem_path).read_bytes()),
    }
    user = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    env["KUBECONFIG"] = write_yaml(
        tmp_path / "kube" / "inline",
        {
            "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
        },
    )
    kube.add_pod(make_pod())
    ok(register(env))
    assert [r.client_cn for r in kube.requests] == ["hook-user"] * len(kube.requests)
    assert kube.requests[0].header("Authorization") is None
    # The key was written to a private temporary file, gone once the hook exited.
    assert not list(tmp_path.glob("consul-hook-kube-*"))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"contexts": []}, "no current-context is set"),
        ({"current-context": "x"}, "no context named 'x'"),
        (
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"exec": {"command": "aws"}}}],
            },
            "user 'u' authenticates with exec, which this hook does not support",
        ),
    ],
)
def test_unusable_kubeconfig_is_one_line(kube, consul, env, tmp_path, document, message):
    env["KUBECONFIG"] = write_yaml(tmp_path / "kube" / "broken", document)
    result = register(env)
    assert message in error_line(result)
    assert result.returncode == 2


def test_in_cluster_service_account(kube, consul, env, tmp_path):
    del env["KUBECONFIG"]
    env.update(kube.in_cluster_env(tmp_path / "serviceaccount"))
    kube.add_pod(make_pod())
    ok(register(env))
    assert consul.registrations()[0]["ID"] == f"{IP}_8080"
    # The kubelet rotates the token; the hook reads the file, not a copy.
    kube.token = "rotated-token"
    (tmp_path / "serviceaccount" / "token").write_text("rotated-token")
    ok(deregister(env))
    assert kube.requests[-1].header("Authorization") == "Bearer rotated-token"
    assert consul.services() == {}


# -- Consul ------------------------------------------------------------------------------------


def test_acl_token_from_file_goes_in_the_header_only(kube, env, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    kube.add_pod(make_pod())
    with ConsulDouble(acl_token="s3cret") as consul:
        env["CONSUL_HTTP_ADDR"] = consul.addr
        ok(register(env, "--consul-acl-file", str(token_file)))
        ok(deregister(env, "--consul-acl-file", str(token_file)))
        assert consul.registrations() and consul.services() == {}
        assert all(r.header("X-Consul-Token") == "s3cret" for r in consul.requests)
        assert all("token" not in r.query for r in consul.requests)


def test_unreadable_acl_file_is_one_line(kube, consul, env, tmp_path):
    kube.add_pod(make_pod())
    result = register(env, "--consul-acl-file", str(tmp_path / "nope"))
    assert error_line(result) == (
        f"cannot read Consul ACL token file {tmp_path / 'nope'}: No such file or directory"
    )
    assert consul.requests == []


def test_consul_acl_refusal_is_one_line_with_consuls_message(kube, env):
    kube.add_pod(make_pod())
    with ConsulDouble(acl_token="s3cret") as consul:
        env["CONSUL_HTTP_ADDR"] = consul.addr
        result = register({**env, "CONSUL_HTTP_TOKEN": "wrong"})
        assert error_line(result) == (
            f"Consul refused to register service 'web' (id {IP}_8080): 403 ACL not found "
            "(check the ACL token)"
        )
        assert consul.services() == {}


def test_partial_failure_rolls_back_the_first_service(kube, consul, env):
    kube.add_pod(make_pod())
    definitions = [
        {"port": 31000, "labels": {"service": "true"}},
        {"port": 31001, "labels": {"consul": "web-admin"}},
    ]
    first = f"{IP}_31000"
    consul.fail_when(
        lambda r: r.path.startswith("/v1/agent/service/register") and b"31001" in r.body,
        400,
        "Invalid service address",
    )
    result = register({**env, "PORT_DEFINITIONS": json.dumps(definitions)})
    assert error_line(result) == (
        f"Consul refused to register service 'web-admin' (id {IP}_31001): "
        "400 Invalid service address"
    )
    assert [b["ID"] for b in consul.registrations()] == [first]
    assert consul.services() == {}
    assert first in [sid for _, sid in consul.deregistrations()]


# -- deregistration fallbacks ------------------------------------------------------------------


def test_deregister_falls_back_to_the_state_file_when_the_pod_is_gone(kube, consul, env):
    definitions = [
        {"port": 31000, "labels": {"service": "true"}},
        {"port": 31001, "labels": {"consul": "b"}},
    ]
    env["PORT_DEFINITIONS"] = json.dumps(definitions)
    kube.add_pod(make_pod())
    ok(register(env))
    assert len(consul.services()) == 2
    kube.delete_pod(NS, POD)
    result = ok(deregister(env))
    assert f'pods "{POD}" not found' in result.stderr and "recorded" in result.stderr
    assert consul.services() == {}


def test_deregister_falls_back_to_the_state_file_when_the_api_is_down(kube, consul, env):
    kube.add_pod(make_pod())
    ok(register(env))
    kube.stop()
    env["KUBERNETES_GET_POD_TIMEOUT"] = "0.3s"
    result = ok(deregister(env))
    assert "unreachable" in result.stderr and "deregistering the 1 service(s)" in result.stderr
    assert consul.services() == {}
    # The state file is cleared: a second preStop finds nothing and still succeeds.
    assert "nothing registered to deregister" in ok(deregister(env)).stderr


def test_deregister_also_removes_recorded_ids_the_pod_no_longer_lists(kube, consul, env):
    kube.add_pod(make_pod())
    ok(register(env))
    consul_put(consul, "/v1/agent/service/register", {"ID": "other", "Name": "x", "Port": 1})
    unlabelled = make_pod()
    del unlabelled["metadata"]["labels"]["consul"]
    kube.set_pod(NS, POD, unlabelled)
    ok(deregister(env))
    assert list(consul.services()) == ["other"]  # never recorded for this pod: left alone


def test_deregister_of_something_already_gone_succeeds(kube, consul, env):
    kube.add_pod(make_pod())
    result = ok(deregister(env))
    assert "already gone" in result.stderr
