"""Every file under ``examples/`` parses, and does what it says when run against the doubles.

Marathon apps become the TaskInfo Marathon would send and run through the real executor
(the installed console script in place of the path on the agent) with the Mesos agent
double and the Consul double. Kubernetes pods are served by the Kubernetes API double and
run through ``consul-registration-hook register k8s`` / ``deregister k8s``.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.doubles.consul import ConsulDouble
from tests.doubles.kube import KubeDouble
from tests.doubles.mesos_agent import MesosAgentDouble, marathon_task_info

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MARATHON = sorted((EXAMPLES / "marathon").glob("*.json"))
KUBERNETES = sorted((EXAMPLES / "k8s").glob("*.yaml"))
EXECUTOR = str(Path(sys.executable).parent / "consul-mesos-executor")


def test_every_example_parses():
    assert len(MARATHON) >= 4 and len(KUBERNETES) >= 4
    for path in MARATHON:
        assert isinstance(json.loads(path.read_text()), dict), path.name
    for path in KUBERNETES:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, path.name
        for document in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(document), path.name


# -- Marathon ----------------------------------------------------------------------------------


def services_of(name: str, task_id: str, ports: list[int]) -> dict[str, tuple]:
    """What Consul must hold for each example while its task runs: by service id,
    (name, port, sorted tags, check type or None)."""
    task = f"marathon-task:{task_id}"
    if name == "hello-http.json":
        [port] = ports
        return {f"127.0.0.1_{port}": ("hello-http", port, ["example", "marathon", task], "http")}
    if name == "multi-port.json":
        http, admin = ports
        web = ["marathon", "public", f"admin-port:{admin}", "production", task]
        return {
            f"127.0.0.1_{http}_shop": ("shop", http, sorted(web), "tcp"),
            f"127.0.0.1_{http}_shop-web": ("shop-web", http, sorted([*web, "frontend"]), "tcp"),
            f"127.0.0.1_{admin}": (
                "shop-admin",
                admin,
                sorted(["marathon", "internal", "production", task]),
                "tcp",
            ),
        }
    if name == "command-check.json":
        [port] = ports
        return {f"127.0.0.1_{port}": ("command-check", port, ["marathon", task], "ttl")}
    if name == "graceful-kill.json":
        [port] = ports
        return {f"127.0.0.1_{port}": ("graceful", port, ["marathon", task], None)}
    raise AssertionError(f"examples/marathon/{name} has no expectation in this test")


def consul_view(consul: ConsulDouble) -> dict[str, tuple]:
    checks = {c["ServiceID"]: c["Type"] for c in consul.checks().values()}
    return {
        sid: (s["Service"], s["Port"], sorted(s["Tags"]), checks.get(sid))
        for sid, s in consul.services().items()
    }


@pytest.mark.parametrize("path", MARATHON, ids=[p.name for p in MARATHON])
def test_marathon_example_registers_then_deregisters_on_kill(path, tmp_path):
    app = json.loads(path.read_text())
    assert app["executor"] == "/opt/consul-registration-hook/consul-mesos-executor"
    app_env = app.get("env") or {}
    settings = {"CONSUL_CATALOG_WAIT": "1s", "CONSUL_RETRY_DEADLINE": "2s"}
    # An agent-wide default, as MESOS_EXECUTOR_ENVIRONMENT_VARIABLES would set it; an app's
    # own env (graceful-kill.json) must win, so it is left alone there.
    if "EXECUTOR_PROPAGATION_DELAY" not in app_env:
        settings["EXECUTOR_PROPAGATION_DELAY"] = "0.2s"
    with ConsulDouble() as consul, MesosAgentDouble() as agent:
        task = marathon_task_info(app, executor_path=EXECUTOR)
        ports = [p["number"] for p in task["discovery"]["ports"]["ports"]]
        settings["CONSUL_HTTP_ADDR"] = consul.addr
        proc = agent.launch_executor(
            EXECUTOR, task, sandbox=str(tmp_path / "sandbox"), extra_env=settings
        )
        checked = "health_check" in task
        agent.wait_for_update("TASK_RUNNING", healthy=True if checked else None, timeout=20)
        assert consul_view(consul) == services_of(path.name, proc.task_id, ports)

        agent.kill(proc.task_id)
        killed = agent.wait_for_update("TASK_KILLED", timeout=30)
        assert consul.services() == {}
        last_deregistration = max(when for when, _ in consul.deregistrations())
        delay = float(app_env.get("EXECUTOR_PROPAGATION_DELAY", "0.2s").rstrip("s"))
        # The task is stopped (SIGTERM, then TASK_KILLED) only after the propagation delay.
        assert killed.time - last_deregistration >= delay
        assert proc.wait_exit(15) == 0
        assert "Traceback" not in proc.stderr()


def test_marathon_cmds_reach_the_executor_whole():
    # Marathon runs `chmod … && exec '<executor>' <cmd>` through the agent's shell, so an
    # unquoted `&`, `;` or `|` in cmd splits the line there: the part after it runs beside
    # the executor, unsupervised. Such a cmd has to be wrapped in `sh -c '…'`.
    for path in MARATHON:
        lexer = shlex.shlex(json.loads(path.read_text())["cmd"], posix=True, punctuation_chars=True)
        operators = [token for token in lexer if token and set(token) <= set("&;|()<>")]
        assert not operators, f"{path.name}: {operators} would be run by the agent's shell"


# -- Kubernetes --------------------------------------------------------------------------------

HOOK = str(Path(sys.executable).parent / "consul-registration-hook")
POD_IP = "127.0.0.42"  # any loopback address: the probe and Consul's check reach it here
NODE = {"metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}}}


def k8s_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


ALL_K8S = [doc for path in KUBERNETES for doc in k8s_documents(path)]
PODS = [
    pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")
    for path in KUBERNETES
    for doc in k8s_documents(path)
    if doc["kind"] == "Pod"
]


def find(kind: str, name: str) -> dict:
    found = [d for d in ALL_K8S if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"examples/k8s has {len(found)} {kind} named {name}"
    return found[0]


def secret_value(name: str, key: str) -> str:
    secret = find("Secret", name)
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


FIELD_REFS = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "spec.nodeName": lambda pod: pod["spec"]["nodeName"],
    "status.podIP": lambda pod: pod["status"]["podIP"],
    "status.hostIP": lambda pod: pod["status"]["hostIP"],
}


def container_env(container: dict, pod: dict) -> dict[str, str]:
    """The container's environment as the kubelet builds it, `$(VAR)` references included."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), var["value"])
            assert "$(" not in value, f"{var['name']}: unresolved reference in {value!r}"
        else:
            source = var["valueFrom"]
            if "fieldRef" in source:
                value = FIELD_REFS[source["fieldRef"]["fieldPath"]](pod)
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = find("ConfigMap", ref["name"])["data"][ref["key"]]
            else:
                ref = source["secretKeyRef"]
                value = secret_value(ref["name"], ref["key"])
        env[var["name"]] = value
    return env


def mount_volumes(container: dict, pod: dict, root: Path) -> dict[str, str]:
    """Write the secret files the container mounts under `root`; `{mountPath: local path}`.

    `/hooks` maps to the directory of the installed hook. Any other volume is an error here.
    """
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if mount["mountPath"] == "/hooks":
            assert "hostPath" in volume or "emptyDir" in volume
            mounts["/hooks"] = str(Path(HOOK).parent)
        else:
            directory = root / mount["name"]
            directory.mkdir(parents=True)
            for item in volume["secret"]["items"]:
                value = secret_value(volume["secret"]["secretName"], item["key"])
                (directory / item["path"]).write_text(value)
            mounts[mount["mountPath"]] = str(directory)
    return mounts


def hook_line(container: dict, event: str, mounts: dict[str, str]) -> str:
    """The lifecycle hook's shell line, with mounted paths pointing at their local copies."""
    command = container["lifecycle"][event]["exec"]["command"]
    assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3
    line = command[2]
    for mount_path, local in mounts.items():
        line = line.replace(f"{mount_path}/", f"{local}/")
    return line


class App(BaseHTTPRequestHandler):
    """The service container's `python3 -m http.server 8080`, answering every GET."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


# Per pod: service name, check fields (beside CheckID, Interval 10s, Timeout 2s and
# DeregisterCriticalServiceAfter), and tags between the pod tags and the instance tag.
K8S_EXPECTED = {
    "myservice-pod": (
        "myservice",
        {"HTTP": f"http://{POD_IP}:8080/", "Method": "GET"},
        ["zone:zone-a", "version:1.0"],
    ),
    "myservice-acl-pod": (
        "myservice-acl",
        {"HTTP": f"http://{POD_IP}:8080/", "Method": "GET"},
        ["zone:zone-a"],
    ),
    "pod-with-consul-hook": ("service-name", {"TCP": f"{POD_IP}:8080"}, ["zone:zone-a"]),
}


@pytest.fixture
def pod_app():
    """The service container's `python3 -m http.server 8080`, on the pod's IP."""
    try:
        server = ThreadingHTTPServer((POD_IP, 8080), App)
    except OSError as exc:
        pytest.skip(f"cannot listen on {POD_IP}:8080 for the pod's app: {exc}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("manifest", PODS)
def test_kubernetes_pod_registers_on_post_start_and_deregisters_on_pre_stop(
    manifest, tmp_path, pod_app
):
    pod = copy.deepcopy(manifest)
    pod["spec"]["nodeName"] = NODE["metadata"]["name"]
    pod["status"] = {"phase": "Pending", "podIP": POD_IP, "hostIP": "127.0.0.1"}
    name = pod["metadata"]["name"]
    [container] = [c for c in pod["spec"]["containers"] if "lifecycle" in c]
    mounts = mount_volumes(container, pod, tmp_path / "volumes")
    uses_acl = "--consul-acl-file" in hook_line(container, "postStart", mounts)
    token = secret_value("consul-acl", "agent-token") if uses_acl else None
    with KubeDouble() as kube, ConsulDouble(acl_token=token) as consul:
        kube.add_pod(pod)
        kube.add_node(NODE)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TMPDIR": str(tmp_path),
            **container_env(container, pod),
            # What every container gets from the kubelet (the service account dir moved).
            **kube.in_cluster_env(tmp_path / "serviceaccount"),
            # The double stands in for the Consul agent the manifest points at.
            "CONSUL_HTTP_ADDR": consul.addr,
            "CONSUL_CATALOG_WAIT": "1s",
            "CONSUL_HOOK_STATE_DIR": str(tmp_path / "state"),
        }

        def run(event: str) -> None:
            line = hook_line(container, event, mounts)
            result = subprocess.run(
                ["/bin/sh", "-c", line], env=env, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, f"{event}: {result.stderr}"
            assert "Traceback" not in result.stderr

        run("postStart")
        service, check, tags = K8S_EXPECTED[name]
        service_id = f"{POD_IP}_8080"
        assert consul.registrations() == [
            {
                "ID": service_id,
                "Name": service,
                "Tags": [
                    f"k8sPodName: {name}",
                    "k8sPodNamespace: default",
                    *tags,
                    f"instance:{name}_8080",
                ],
                "Address": POD_IP,
                "Port": 8080,
                "Check": {
                    "CheckID": f"service:{service_id}",
                    **check,
                    "Interval": "10s",
                    "Timeout": "2s",
                    "DeregisterCriticalServiceAfter": "15m",
                },
            }
        ]
        before = len(consul.deregistrations())  # register also clears stale -secured twins
        run("preStop")
        assert consul.services() == {}
        assert [sid for _, sid in consul.deregistrations()[before:]] == [service_id]


def test_acl_pieces_share_one_token():
    # The DaemonSet bootstraps Consul's ACLs with the secret the service pod mounts as its
    # token file, so the token the hook presents is one the agent knows.
    daemonset = find("DaemonSet", "consul-agent")
    [agent] = daemonset["spec"]["template"]["spec"]["containers"]
    refs = [
        v["valueFrom"]["secretKeyRef"]
        for v in agent["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    ]
    assert refs == [{"name": "consul-acl", "key": "agent-token"}]
    config = json.loads(
        container_env(agent, {"status": {"hostIP": "10.0.0.1"}})["CONSUL_LOCAL_CONFIG"]
    )
    token = secret_value("consul-acl", "agent-token")
    assert config["acl"]["enabled"] is True
    assert config["acl"]["tokens"] == {"initial_management": token, "agent": token}
    pod = find("Pod", "myservice-acl-pod")
    [volume] = [v for v in pod["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "consul-acl"
    assert volume["secret"]["items"] == [{"key": "agent-token", "path": "token", "mode": 0o444}]


def test_pods_run_as_a_service_account_allowed_to_read_pods_and_nodes():
    account = find("ServiceAccount", "consul-hook")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": "default"}
    for kind, role_kind, resource in (
        ("RoleBinding", "Role", "pods"),
        ("ClusterRoleBinding", "ClusterRole", "nodes"),
    ):
        [binding] = [d for d in ALL_K8S if d["kind"] == kind]
        assert subject in binding["subjects"]
        role = find(role_kind, binding["roleRef"]["name"])
        assert {"apiGroups": [""], "resources": [resource], "verbs": ["get"]} in role["rules"]
    for param in PODS:
        [pod] = param.values
        assert pod["spec"]["serviceAccountName"] == account["name"]


def test_init_container_unpacks_the_tarball_into_the_shared_volume():
    pod = find("Pod", "pod-with-consul-hook")
    [init] = pod["spec"]["initContainers"]
    assert init["args"][-1].endswith("| tar -C /hooks -zxvf -")
    # The seed had this env block mis-indented; here it resolves from the ConfigMap.
    url = container_env(init, pod)["GS_URL"]
    assert url.startswith("gs://") and url.endswith("/consul-registration-hook.tar.gz")
    [mount] = init["volumeMounts"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == "/hooks" and volume == {"name": "hooks", "emptyDir": {}}
