"""``make demo``: both entry points against local doubles, with a timeline to read.

1. Kubernetes mode: a pod served by the Kubernetes API double is registered by
   ``consul-registration-hook register k8s`` (its readiness probe passing against a local
   server) and deregistered by ``deregister k8s``.
2. Mesos mode: a Marathon-shaped app is launched through the real ``consul-mesos-executor``
   by the Mesos agent double, registered in the Consul double, then killed; the timeline shows
   registered → TASK_RUNNING … KILL → deregistered → propagation delay → SIGTERM → exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scenario import BIN, TASK_APP, free_port, hook_env, ready_server, sample_pod

from tests.doubles.consul import ConsulDouble
from tests.doubles.kube import KubeDouble
from tests.doubles.mesos_agent import MesosAgentDouble, marathon_task_info

DELAY = "2s"


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 72 - len(text)))


def show_services(consul: ConsulDouble) -> None:
    services = consul.services()
    if not services:
        print("  Consul: no services")
    for sid, service in services.items():
        print(
            f"  Consul: {sid}  {service['Service']} {service['Address']}:{service['Port']}"
            f"  tags={service['Tags']}"
        )


def kubernetes_demo(workdir: Path) -> None:
    heading("Kubernetes: register k8s / deregister k8s")
    node = {"metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1"}}}
    with ready_server() as port, ConsulDouble() as consul, KubeDouble() as kube:
        kube.add_pod(sample_pod(port, CONSUL_TAG_team="team:web"))
        kube.add_node(node)
        env = hook_env(workdir, consul.addr, kube)
        for action in ("register", "deregister"):
            print(f"$ consul-registration-hook {action} k8s")
            result = subprocess.run(
                [str(BIN / "consul-registration-hook"), action, "k8s"],
                env=env,
                capture_output=True,
                text=True,
            )
            for line in result.stderr.splitlines():
                print(f"  | {line}")
            print(f"  exit {result.returncode}")
            if action == "register":
                print("  registration body Consul received:")
                print("  " + json.dumps(consul.registrations()[-1]))
            show_services(consul)


def executor_demo(workdir: Path) -> int:
    heading(f"Mesos/Marathon: consul-mesos-executor (propagation delay {DELAY})")
    executor = str(BIN / "consul-mesos-executor")
    app = {
        "id": "/demo/hello",
        "cmd": f"{sys.executable} {TASK_APP} --port $PORT0 --events $MESOS_SANDBOX/events",
        "executor": executor,
        "labels": {"consul": "hello", "public": "tag"},
        "portDefinitions": [{"port": 0, "name": "http"}],
        "taskKillGracePeriodSeconds": 3,
        "env": {"EXECUTOR_PROPAGATION_DELAY": DELAY},
    }
    print("Marathon app:", json.dumps(app))
    offset = time.time() - time.monotonic()
    with ConsulDouble() as consul, MesosAgentDouble() as agent:
        sandbox = workdir / "sandbox"
        sandbox.mkdir()
        task = marathon_task_info(app, executor_path=executor, ports=[free_port()])
        extra = {"CONSUL_HTTP_ADDR": consul.addr, "EXECUTOR_ADVERTISE_IP": "127.0.0.1"}
        proc = agent.launch_executor(executor, task, sandbox=str(sandbox), extra_env=extra)
        try:
            agent.wait_for_update("TASK_RUNNING", timeout=20)
            show_services(consul)
            time.sleep(1)
            kill_at = time.monotonic()
            print(f"\nKILL {proc.task_id}")
            agent.kill(proc.task_id)
            agent.wait_for_update("TASK_KILLED", timeout=30)
            code = proc.wait_exit(30)
            show_services(consul)
        finally:
            proc.kill_group()

        events = [
            (
                r.time,
                f"agent  <- {r.state}" + (f" healthy={r.healthy}" if r.healthy is not None else ""),
            )
            for r in agent.updates
        ]
        events += [
            (r.time, "agent  <- SUBSCRIBE (LAUNCH follows)")
            for r in agent.requests
            if r.type == "SUBSCRIBE"
        ][:1]
        events.append((kill_at, "agent  -> KILL"))
        events += [
            (r.time, f"consul <- {r.method} {r.path}")
            for r in consul.requests
            if "/service/" in r.path and "catalog" not in r.path
        ]
        for line in (sandbox / "events").read_text().splitlines():
            event = json.loads(line)
            events.append((event["time"] - offset, f"task      {event['event']}"))
        start = min(t for t, _ in events)
        print("\nTimeline (ms since SUBSCRIBE):")
        for at, what in sorted(events):
            print(f"  {(at - start) * 1000:9.1f}  {what}")
        print(f"\nexecutor exit code: {code}")
        return code


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        kubernetes_demo(Path(tmp))
        return executor_demo(Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())
